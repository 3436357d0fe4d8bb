"""``explain_dataset``: explain every sample of a dataset with one or several methods, into resumable shards.

The pipeline: a ``DataLoader`` (worker processes decode, pinned memory on CUDA) feeds the
:class:`~pycam_fast.Explainer` on the device (one explained forward for all the gradient/activation methods), and a
background thread (:class:`~.writer.ShardWriter`) writes each shard when its samples are done, so decoding, compute
and writing overlap. Under ``torchrun`` each rank explains its own shards and rank 0 merges the index and writes the
manifest at the end (:mod:`.distributed`).

Output folder::

    manifest.json                      configuration, versions, summary ("status": "running" -> "complete")
    index.parquet | index.jsonl        one record per sample (see writer.INDEX_FIELDS), sorted by sample_id
    shards/shard-00000.safetensors     per method (n_ok, *map_size) maps + sample_id (n_ok,)
    shards/shard-00000.index.parquet   the shard's records

Rerunning the same call resumes: finished shards are skipped (a different configuration is refused), and the result
set is the same as an uninterrupted run's, file for file. The maps of a shard do not depend on the number of ranks
or on which run wrote it (each shard's batches are the same, noise is seeded per shard).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._log import log_once
from ..engine import Explainer
from .distributed import DistContext, rank_shards, setup, shard_ranges
from .sources import SafeItems, as_dataset, collate, sources_digest
from .writer import (
    INDEX_FIELDS,
    BatchRecords,
    ShardWriter,
    finished_shards,
    index_format,
    read_index_file,
    shard_paths,
    write_index_file,
)

__all__ = ["MAP_DTYPES", "FAIL_AFTER_ENV", "RunSummary", "explain_dataset"]

#: stored map dtypes (``uint8``: ``round(255 * map)``)
MAP_DTYPES = ("fp32", "fp16", "uint8")
#: test hook: the writer raises after writing this many shards (a simulated crash)
FAIL_AFTER_ENV = "PYCAM_FAST_TEST_FAIL_AFTER_SHARDS"
FORMAT = "pycam_fast.explain_dataset/1"


@dataclass
class RunSummary:
    """What one call did (all ranks together).

    Attributes:
        out: the output folder.
        num_samples: samples in the dataset.
        explained: samples processed by this call (explained or failed).
        errors: samples without maps in the whole result set.
        skipped_shards: shards already finished by an earlier run.
        wall_s: seconds of this call.
        images_per_s: ``explained / wall_s``.
        world_size: number of ranks.

    """

    out: str
    num_samples: int
    explained: int
    errors: int
    skipped_shards: int
    wall_s: float
    images_per_s: float
    world_size: int


def explain_dataset(
    source: Any,
    model: nn.Module,
    methods: str | Sequence[str],
    out: str | Path,
    *,
    target_layer: nn.Module | str | None = None,
    class_idx: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 64,
    shard_size: int = 1024,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    device: str | torch.device | None = "auto",
    resolution: str | Sequence[int] = "input",
    map_dtype: str = "fp32",
    precision: str = "fp32",
    backend: str = "auto",
    channels_last: bool = False,
    index: str = "auto",
    seed: int = 0,
    model_name: str | None = None,
    progress: bool = False,
    fail_after_shards: int | None = None,
    **method_kwargs: Any,
) -> RunSummary:
    """Explain every sample of ``source`` and write the maps, the index and the manifest to ``out``.

    Under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) every rank calls this with the same arguments.
    The model is moved to the device (``model.to(device)``).

    Args:
        source: an image folder (recursive), a file list (``.txt``/``.lst``/``.csv``), a sequence of image paths, or
            a map-style ``Dataset`` whose items are tensors, ``(tensor, ...)`` tuples or dicts with ``"image"``.
        model: the classifier (``(N, C, H, W) -> (N, K)``).
        methods: one or several method names (the gradient/activation ones share one forward).
        out: the output folder (created; an earlier run's folder is resumed).
        target_layer: the target layer (module or name), ``None``: automatic.
        class_idx: the class to explain for every sample, ``None``: each sample's top class.
        image_size: the input side or ``(H, W)`` for image files (required for them).
        mean: per-channel normalisation mean for image files (``None``: inputs in ``[0, 1]``).
        std: per-channel normalisation std for image files.
        batch_size: samples per forward.
        shard_size: samples per shard (the unit of writing, resuming and distribution).
        num_workers: DataLoader worker processes (``0``: decode in this process).
        pin_memory: pinned host memory for the batches (default: on CUDA).
        device: ``"auto"`` (``cuda:LOCAL_RANK`` if available, else CPU) or a device.
        resolution: ``"input"`` (the input's size), ``"feature"`` (the target layer's) or ``(H, W)``.
        map_dtype: stored map dtype: ``"fp32"``, ``"fp16"`` or ``"uint8"`` (``round(255 * map)``).
        precision: autocast of the forward: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        backend: backend of the CAM ops.
        channels_last: run the explained forward on the private channels-last copy.
        index: index format: ``"auto"`` (Parquet with pyarrow, else JSON lines), ``"parquet"`` or ``"jsonl"``.
        seed: noisy methods draw from ``seed + shard`` (the maps do not depend on the ranks).
        model_name: how the manifest names the model (default: its class name).
        progress: a tqdm bar (rank 0) with images/s.
        fail_after_shards: test hook, a simulated crash after this many written shards (also the
            ``PYCAM_FAST_TEST_FAIL_AFTER_SHARDS`` environment variable).
        method_kwargs: the methods' options (each goes to every method that takes it).

    Returns:
        a :class:`RunSummary`.

    Raises:
        ValueError: bad arguments, or ``out`` holds a run with another configuration.

    """
    start = time.perf_counter()
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"`map_dtype` must be one of {MAP_DTYPES}, got {map_dtype!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    output_size = _output_size(resolution)
    names = [methods] if isinstance(methods, str) else list(methods)
    out = Path(out)
    dataset = as_dataset(source, image_size, mean, std)
    fmt = index_format(index)
    if fail_after_shards is None and os.environ.get(FAIL_AFTER_ENV):
        fail_after_shards = int(os.environ[FAIL_AFTER_ENV])

    ctx, dev = setup(device)
    try:
        explainer = Explainer(
            model.to(dev),
            methods=names,
            target_layer=target_layer,
            output_size=output_size,
            precision=precision,
            backend=backend,
            channels_last=channels_last,
            **method_kwargs,
        )
        ranges = shard_ranges(len(dataset), shard_size)
        config = {
            "model": model_name or type(model).__name__,
            "methods": list(explainer.methods),
            "method_options": explainer.method_options,
            "target_layer": _layer_name(model, target_layer),
            "class_idx": class_idx,
            "resolution": resolution if isinstance(resolution, str) else list(resolution),
            "map_dtype": map_dtype,
            "precision": precision,
            "backend": backend,
            "channels_last": channels_last,
            "batch_size": batch_size,
            "shard_size": shard_size,
            "num_samples": len(dataset),
            "num_shards": len(ranges),
            "sources_sha1": sources_digest([dataset.source(i) for i in range(len(dataset))]),
            "image_size": list(image_size) if isinstance(image_size, (tuple, list)) else image_size,
            "mean": None if mean is None else list(mean),
            "std": None if std is None else list(std),
            "index_format": fmt,
            "seed": seed,
        }
        config = json.loads(json.dumps(config, default=repr))  # the JSON form, as read back on resume
        _check_resume(out, config)
        ctx.barrier()  # every rank checked the old manifest before rank 0 replaces it
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "manifest.json", _manifest(config, "running", {}))

        mine = rank_shards(len(ranges), ctx.rank, ctx.world_size)
        done = finished_shards(out, mine, fmt)
        todo = [k for k in mine if k not in done]
        job = _Job(explainer, dataset, dev, class_idx, map_dtype, shard_size, seed)
        sizes = {k: len(ranges[k]) for k in todo}
        metadata = {"format": FORMAT, "map_dtype": map_dtype, "methods": ",".join(explainer.methods)}
        writer = ShardWriter(out, sizes, explainer.methods, fmt, metadata, fail_after=fail_after_shards)
        batches = [list(ranges[k][i : i + batch_size]) for k in todo for i in range(0, len(ranges[k]), batch_size)]
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            pin_memory=dev.type == "cuda" if pin_memory is None else pin_memory,
            collate_fn=collate,
        )
        bar = _bar(sum(sizes.values()), progress and ctx.is_main, ",".join(explainer.methods))
        try:
            for batch in loader:
                writer.submit(job.explain(batch))
                if bar is not None:
                    bar.update(len(batch["errors"]))
            writer.close()
        finally:
            writer.stop()
            if bar is not None:
                bar.close()

        stats = ctx.all_gather(
            {
                "explained": sum(sizes.values()),
                "skipped": len(done),
                "layer": explainer.target_name,
                "map": job.map_shape,
            }
        )
        explained = sum(s["explained"] for s in stats)
        skipped = sum(s["skipped"] for s in stats)
        wall = time.perf_counter() - start
        merged: int | str = 0
        if ctx.is_main:
            try:
                merged = _merge(out, config, len(ranges), fmt, ctx, wall, explained, stats, job.device)
            except Exception as exc:  # tell the other ranks instead of leaving them waiting
                merged = f"{type(exc).__name__}: {exc}"
        merged = ctx.all_gather(merged)[0]
        if isinstance(merged, str):
            raise RuntimeError(f"merging the index failed on rank 0: {merged}")
        rate = explained / max(wall, 1e-9)
        return RunSummary(str(out), len(dataset), explained, merged, skipped, wall, rate, ctx.world_size)
    finally:
        ctx.close()


class _Job:
    """Explains one loader batch into :class:`BatchRecords`."""

    def __init__(
        self,
        explainer: Explainer,
        dataset: SafeItems,
        device: torch.device,
        class_idx: int | None,
        map_dtype: str,
        shard_size: int,
        seed: int,
    ) -> None:
        self.explainer, self.dataset, self.device = explainer, dataset, device
        self.class_idx, self.map_dtype, self.shard_size, self.seed = class_idx, map_dtype, shard_size, seed
        self.shard: int | None = None
        self.map_shape: list[int] | None = None

    def explain(self, batch: dict[str, Any]) -> BatchRecords:
        indices: list[int] = batch["index"].tolist()
        shard = indices[0] // self.shard_size
        if shard != self.shard:  # noisy methods: the same draws whichever rank or run explains the shard
            torch.manual_seed(self.seed + shard)
            self.shard = shard
        records = [
            {name: None for name in INDEX_FIELDS} | {"sample_id": i, "source": self.dataset.source(i), "error": e}
            for i, e in zip(indices, batch["errors"], strict=True)
        ]
        ok = [r for r in records if r["error"] is None]
        maps: dict[str, np.ndarray] = {}
        if ok:
            try:
                maps = self._explain(batch["inputs"], ok)
            except Exception as exc:
                log_once(f"pycam_fast explain_dataset: a batch failed ({type(exc).__name__}: {exc})")
                for r in ok:
                    r.update({"predicted": None, "target": None, "score": None, "probability": None})
                    r["error"] = f"{type(exc).__name__}: {exc}"
                maps = {}
        return BatchRecords(shard, records, maps)

    def _explain(self, inputs: Tensor, ok: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        x = inputs.to(self.device, non_blocking=True)
        cams = self.explainer(x, class_idx=self.class_idx)
        logits = self.explainer.logits.detach().float()  # type: ignore[union-attr]
        target = torch.as_tensor(self.explainer.explained_classes, device=logits.device)
        score = logits.gather(1, target[:, None])[:, 0]
        prob = torch.softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        columns = {
            "predicted": logits.argmax(1).tolist(),
            "target": target.tolist(),
            "score": score.double().tolist(),
            "probability": prob.double().tolist(),
        }
        for row, r in enumerate(ok):
            for name, values in columns.items():
                r[name] = values[row]
        stored = {name: _stored(m, self.map_dtype) for name, m in cams.items()}  # type: ignore[union-attr]
        self.map_shape = list(next(iter(stored.values())).shape[1:])
        return stored


def _stored(maps: Tensor, map_dtype: str) -> np.ndarray:
    """``(N, *S)`` maps in ``[0, 1]`` in the stored dtype, on the host."""
    if map_dtype == "uint8":
        maps = torch.nan_to_num(maps.float(), 0.0).mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    elif map_dtype == "fp16":
        maps = maps.half()
    else:
        maps = maps.float()
    return maps.cpu().numpy()


def _output_size(resolution: str | Sequence[int]) -> str | tuple[int, ...] | None:
    if resolution == "input":
        return "input"
    if resolution == "feature":
        return None
    if isinstance(resolution, str):
        raise ValueError(f"`resolution` must be 'input', 'feature' or (H, W), got {resolution!r}")
    return tuple(int(s) for s in resolution)


def _layer_name(model: nn.Module, layer: nn.Module | str | None) -> str | None:
    if layer is None or isinstance(layer, str):
        return layer
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError("`target_layer` is not a submodule of the model")


def _manifest(config: dict[str, Any], status: str, run: dict[str, Any]) -> dict[str, Any]:
    from ..cli.common import versions

    fmt = config["index_format"]
    return {
        "format": FORMAT,
        "status": status,
        "config": config,
        "files": {
            "index": f"index.{fmt}",
            "maps": "shards/shard-{shard:05d}.safetensors",
            "shard_index": f"shards/shard-{{shard:05d}}.index.{fmt}",
        },
        "index_fields": {name: {"type": kind, "meaning": text} for name, (kind, text) in INDEX_FIELDS.items()},
        "maps": "per method: (n_ok, *map_size) maps in [0, 1] (uint8: round(255 * map)), rows in sample_id order; "
        "the tensor 'sample_id' names each row",
        "run": run,
        "versions": versions(),
    }


def _check_resume(out: Path, config: dict[str, Any]) -> None:
    path = out / "manifest.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("config")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); use a fresh --out folder") from exc
    if old != config:
        changed = sorted(k for k in set(old or {}) | set(config) if (old or {}).get(k) != config.get(k))
        raise ValueError(
            f"{out} holds a run with another configuration (differs in {changed}); resume with the same arguments "
            "or use a fresh output folder"
        )


def _merge(
    out: Path,
    config: dict[str, Any],
    num_shards: int,
    fmt: str,
    ctx: DistContext,
    wall: float,
    explained: int,
    stats: list[dict[str, Any]],
    device: torch.device,
) -> int:
    """Rank 0: the merged index and the final manifest; returns the number of failed samples."""
    missing = sorted(set(range(num_shards)) - finished_shards(out, range(num_shards), fmt))
    if missing:
        raise RuntimeError(f"shards {missing[:10]} are missing after every rank finished: rerun to complete them")
    records = [r for k in range(num_shards) for r in read_index_file(shard_paths(out, k, fmt)[1])]
    records.sort(key=lambda r: r["sample_id"])
    index_path = out / f"index.{fmt}"
    tmp = out / f".index.{fmt}.tmp"
    write_index_file(tmp, records, fmt)
    os.replace(tmp, index_path)
    errors = sum(r["error"] is not None for r in records)
    run = {
        "world_size": ctx.world_size,
        "samples": len(records),
        "errors": errors,
        "explained_this_run": explained,
        "wall_s": round(wall, 3),
        "images_per_s": round(explained / max(wall, 1e-9), 2),
        "target_layer": next((s["layer"] for s in stats if s["layer"]), None),
        "map_shape": next((s["map"] for s in stats if s["map"]), None),
        "device": str(device),
    }
    _write_json(out / "manifest.json", _manifest(config, "complete", run))
    return errors


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=repr) + "\n")
    os.replace(tmp, path)


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True)
