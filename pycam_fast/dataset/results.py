"""Reading a dataset run: ``pycam_fast.open_results(DIR)``.

The files are standard (``manifest.json``, ``index.parquet`` or ``index.jsonl``, safetensors shards, see
:mod:`.writer`), so any tool reads them; this reader adds random access by sample id with memory-mapped maps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .writer import INDEX_FIELDS, read_index_file, read_safetensors

__all__ = ["Results", "SampleResult", "open_results"]


@dataclass(frozen=True)
class SampleResult:
    """One sample of a run.

    Attributes:
        sample_id: the sample's position in the source.
        source: its file (or ``""``).
        predicted: the model's top class (``None`` on error).
        target: the explained class (``None`` on error).
        score: the model's output for the explained class (``None`` on error).
        probability: softmax probability of the explained class (``None`` on error).
        error: why there are no maps (``None`` when there are).
        shard: the shard holding the maps.
        offset: the row in the shard's tensors (``-1`` on error).
        maps: method -> ``(*map_size)`` map, memory-mapped, in the run's dtype (uint8: ``value / 255``); empty on
            error.

    """

    sample_id: int
    source: str
    predicted: int | None
    target: int | None
    score: float | None
    probability: float | None
    error: str | None
    shard: int
    offset: int
    maps: dict[str, np.ndarray]


class Results:
    """A run folder: ``len()``, ``sample_ids``, ``results[sample_id]`` (a :class:`SampleResult`), iteration.

    Args:
        out: the run's output folder.

    Raises:
        FileNotFoundError: no ``manifest.json`` in ``out``.

    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        manifest = self.out / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} not found: not a pycam-fast explain-dataset output folder")
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        config = self.manifest["config"]
        self.methods: tuple[str, ...] = tuple(config["methods"])
        fmt = config["index_format"]
        merged = self.out / f"index.{fmt}"
        #: whether the run finished (its merged index exists); else the finished shards' indexes are read
        self.complete = merged.is_file() and self.manifest.get("status") == "complete"
        if merged.is_file():
            records = read_index_file(merged)
        else:
            records = [
                r for p in sorted((self.out / "shards").glob(f"shard-*.index.{fmt}")) for r in read_index_file(p)
            ]
        records.sort(key=lambda r: r["sample_id"])
        #: the index as columns (name -> list), sorted by sample id
        self.columns: dict[str, list[Any]] = {name: [r[name] for r in records] for name in INDEX_FIELDS}
        self._row = {sid: i for i, sid in enumerate(self.columns["sample_id"])}
        self._shards: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._row)

    @property
    def sample_ids(self) -> np.ndarray:
        """The sample ids, ascending ``(len,)`` int64."""
        return np.asarray(self.columns["sample_id"], dtype=np.int64)

    @property
    def errors(self) -> dict[int, str]:
        """Sample id -> error, for the samples without maps."""
        return {s: e for s, e in zip(self.columns["sample_id"], self.columns["error"], strict=True) if e is not None}

    def shard_maps(self, shard: int) -> dict[str, np.ndarray]:
        """A shard's tensors (method -> ``(n_ok, *map_size)``, ``sample_id``), memory-mapped."""
        if shard not in self._shards:
            path = self.out / "shards" / f"shard-{shard:05d}.safetensors"
            self._shards[shard] = read_safetensors(path)[0]
        return self._shards[shard]

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._row

    def __getitem__(self, sample_id: int) -> SampleResult:
        """The sample with id ``sample_id`` (not a position).

        Raises:
            KeyError: no such sample in the run.

        """
        row = self._row.get(int(sample_id))
        if row is None:
            raise KeyError(f"sample id {sample_id} is not in {self.out}")
        fields = {name: self.columns[name][row] for name in INDEX_FIELDS}
        maps = {}
        if fields["error"] is None:
            tensors = self.shard_maps(fields["shard"])
            maps = {name: tensors[name][fields["offset"]] for name in self.methods}
        return SampleResult(maps=maps, **fields)

    def __iter__(self) -> Iterator[SampleResult]:
        for sid in self.columns["sample_id"]:
            yield self[sid]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"Results({str(self.out)!r}, {len(self)} samples, methods={list(self.methods)}, {state})"


def open_results(out: str | Path) -> Results:
    """Open a ``pycam-fast explain-dataset`` output folder (see :class:`Results`)."""
    return Results(out)
