"""Shard files and the background writer of a dataset run.

A shard holds the samples ``[k * shard_size, (k + 1) * shard_size)``. Its files, in ``<out>/shards/``:

- ``shard-KKKKK.safetensors``: one ``(n_ok, *map_size)`` tensor per method (named by the method's lower-case name)
  and ``sample_id`` ``(n_ok,)`` int64, the rows of the samples that were explained, in sample order. Standard
  safetensors (written here, no dependency): an 8-byte little-endian header length, a JSON header, the raw data.
- ``shard-KKKKK.index.parquet`` (or ``.index.jsonl`` without pyarrow): one record per sample of the shard
  (:data:`INDEX_FIELDS`), failed samples included with their ``error``.

Each file is written to a ``.tmp`` name and renamed when complete, the index first and the maps last: a shard is
finished when its maps file exists (:func:`finished_shards`), so a crash never leaves a shard that looks whole.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "INDEX_FIELDS",
    "BatchRecords",
    "ShardWriter",
    "finished_shards",
    "index_format",
    "read_index_file",
    "read_safetensors",
    "shard_paths",
    "write_index_file",
    "write_safetensors",
]

#: the index columns: name -> (pyarrow type name, meaning)
INDEX_FIELDS: dict[str, tuple[str, str]] = {
    "sample_id": ("int64", "position of the sample in the source (folder/list order, or the Dataset's index)"),
    "source": ("string", "the image file (or the Dataset's source of the sample, '' when unknown)"),
    "shard": ("int64", "the shard holding the sample's maps"),
    "offset": ("int64", "row of the sample in the shard's map tensors (-1: no maps, see error)"),
    "predicted": ("int64", "the model's top class (null on error)"),
    "target": ("int64", "the explained class (null on error)"),
    "score": ("float64", "the model's output (logit) for the explained class (null on error)"),
    "probability": ("float64", "softmax probability of the explained class (null on error)"),
    "error": ("string", "why the sample has no maps (null when it has)"),
}

_ST_DTYPES = {"float32": "F32", "float16": "F16", "uint8": "U8", "int64": "I64", "float64": "F64", "int32": "I32"}
_NP_DTYPES = {v: np.dtype(k).newbyteorder("<") for k, v in _ST_DTYPES.items()}


# -- file formats ----------------------------------------------------------------------------------------------------
def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write numpy arrays as a safetensors file (deterministic bytes: sorted names, compact JSON header).

    Args:
        path: the file to write (written as is: callers rename a temporary file).
        tensors: name -> array (float32, float16, uint8, int32, int64 or float64).
        metadata: string -> string pairs stored in the header's ``__metadata__``.

    """
    header: dict[str, Any] = {}
    arrays = []
    offset = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        header[name] = {
            "dtype": _ST_DTYPES[arr.dtype.name],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        arrays.append(arr)
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays:
            f.write(arr.tobytes())
        f.flush()
        os.fsync(f.fileno())


def read_safetensors(path: Path, mmap: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file into numpy arrays (memory-mapped, read-only, when ``mmap``) and its metadata."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    metadata = header.pop("__metadata__", {}) or {}
    start = 8 + length
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        dtype, shape = _NP_DTYPES[info["dtype"]], tuple(info["shape"])
        begin, end = info["data_offsets"]
        if end == begin:
            out[name] = np.empty(shape, dtype)
        elif mmap:
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=shape)
        else:
            with open(path, "rb") as f:
                f.seek(start + begin)
                out[name] = np.frombuffer(f.read(end - begin), dtype).reshape(shape)
    return out, metadata


def index_format(requested: str = "auto") -> str:
    """``"parquet"`` (pyarrow installed) or ``"jsonl"``; ``requested`` forces one.

    Raises:
        ValueError: an unknown format, or parquet without pyarrow.

    """
    if requested not in ("auto", "parquet", "jsonl"):
        raise ValueError(f"`index_format` must be 'auto', 'parquet' or 'jsonl', got {requested!r}")
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        if requested == "parquet":
            raise ValueError("`index_format='parquet'` needs pyarrow (pip install pyarrow)") from None
        return "jsonl"
    return "parquet" if requested == "auto" else requested


def write_index_file(path: Path, records: Sequence[Mapping[str, Any]], fmt: str) -> None:
    """Write index records (:data:`INDEX_FIELDS`) as Parquet or JSON lines."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, getattr(pa, kind)()) for name, (kind, _) in INDEX_FIELDS.items()])
        columns = {name: [r[name] for r in records] for name in INDEX_FIELDS}
        pq.write_table(pa.table(columns, schema=schema), path)
    else:
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps({name: r[name] for name in INDEX_FIELDS}) + "\n")


def read_index_file(path: Path) -> list[dict[str, Any]]:
    """The records of an index file (Parquet or JSON lines, by suffix)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def shard_paths(out: Path, shard: int, fmt: str) -> tuple[Path, Path]:
    """The maps file and the index file of shard ``shard``."""
    stem = out / "shards" / f"shard-{shard:05d}"
    return stem.with_suffix(".safetensors"), Path(f"{stem}.index.{fmt}")


def finished_shards(out: Path, shards: Sequence[int], fmt: str) -> set[int]:
    """The shards among ``shards`` whose files are complete (renamed into place)."""
    done = set()
    for k in shards:
        maps, index = shard_paths(out, k, fmt)
        if maps.is_file() and index.is_file():
            done.add(k)
    return done


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


# -- the background writer -------------------------------------------------------------------------------------------
@dataclass
class BatchRecords:
    """One explained batch, ready to write.

    Attributes:
        shard: the shard the batch belongs to.
        records: one index record per sample (``shard``/``offset`` are filled in by the writer).
        maps: method -> ``(n_ok, *map_size)`` array of the explained samples, in record order.

    """

    shard: int
    records: list[dict[str, Any]]
    maps: dict[str, np.ndarray] = field(default_factory=dict)


class _Shard:
    def __init__(self, size: int) -> None:
        self.size, self.records, self.maps = size, [], {}  # type: ignore[var-annotated]


class ShardWriter:
    """A thread that gathers each shard's batches and writes the shard once all its samples arrived.

    Args:
        out: the run folder.
        shard_sizes: shard -> its number of samples (the shards this process writes).
        methods: the method keys (tensor names).
        fmt: the index format (``"parquet"`` or ``"jsonl"``).
        metadata: strings stored in every maps file's header.
        fail_after: test hook: raise after writing this many shards.
        max_pending: batches queued before :meth:`submit` blocks.

    """

    def __init__(
        self,
        out: Path,
        shard_sizes: Mapping[int, int],
        methods: Sequence[str],
        fmt: str,
        metadata: Mapping[str, str] | None = None,
        fail_after: int | None = None,
        max_pending: int = 8,
    ) -> None:
        self.out, self.sizes, self.methods, self.fmt = out, dict(shard_sizes), list(methods), fmt
        self.metadata = dict(metadata or {})
        self.fail_after = fail_after
        self.written: list[int] = []
        self.error: BaseException | None = None
        (out / "shards").mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[BatchRecords | None] = queue.Queue(max_pending)
        self._open: dict[int, _Shard] = {}
        self._thread = threading.Thread(target=self._loop, name="pycam_fast-shard-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: BatchRecords) -> None:
        """Queue a batch (blocks while ``max_pending`` are queued); re-raises a failure of the writer."""
        self._raise()
        while True:
            try:
                self._queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Write what is queued, stop the thread, and re-raise its failure if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def stop(self) -> None:
        """Stop the thread without raising (after a failure elsewhere); unfinished shards are not written."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self.error is not None:
                continue  # drain: the producer learns of the failure at its next submit
            try:
                self._add(batch)
            except BaseException as exc:
                self.error = exc

    def _add(self, batch: BatchRecords) -> None:
        shard = self._open.setdefault(batch.shard, _Shard(self.sizes[batch.shard]))
        for name, arr in batch.maps.items():
            shard.maps.setdefault(name, []).append(arr)
        shard.records.extend(batch.records)
        if len(shard.records) >= shard.size:
            self._write(batch.shard, self._open.pop(batch.shard))

    def _write(self, k: int, shard: _Shard) -> None:
        records = sorted(shard.records, key=lambda r: r["sample_id"])
        offset = 0
        ids = []
        for r in records:
            r["shard"] = k
            if r["error"] is None:
                r["offset"], offset = offset, offset + 1
                ids.append(r["sample_id"])
            else:
                r["offset"] = -1
        tensors = {name: np.concatenate(parts) for name, parts in shard.maps.items()}
        tensors["sample_id"] = np.asarray(ids, dtype=np.int64)
        maps_path, index_path = shard_paths(self.out, k, self.fmt)
        _replace_atomically(index_path, lambda p: write_index_file(p, records, self.fmt))
        _replace_atomically(maps_path, lambda p: write_safetensors(p, tensors, {**self.metadata, "shard": str(k)}))
        self.written.append(k)
        if self.fail_after is not None and len(self.written) >= self.fail_after:
            raise RuntimeError(f"test hook: failing after {len(self.written)} written shard(s)")
