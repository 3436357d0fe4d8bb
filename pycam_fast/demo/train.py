"""Train the demo CNN on synthetic shapes, deterministically, in a few minutes on 2 CPU cores.

Run ``python -m pycam_fast.demo.train`` to rewrite ``demo_cnn.pt`` and ``demo_cnn.json`` next to this module.
Every training chunk is a fresh batch of images drawn from its own seed (``DATA_SEED_BASE + chunk``), so the model
never sees an image twice; the test set uses ``TEST_SEED``, outside the training seed range.

Two phases: (1) ``total_chunks`` chunks of plain cross-entropy (one-cycle schedule); (2) ``cam_chunks`` further fresh
chunks at a constant ``cam_lr`` where the loss adds the share of the true class's CAM that lies off the object (weight
``cam_loss``; the synthetic data comes with object masks). Without phase 2 the CAM of this small CNN peaks on the
outline of round shapes, often 1-2 px outside the object (GradCAM strict pointing game ~75%); the CAM loss from the
start slows learning down badly. ``--resume-from`` starts phase 2 from saved phase-1 weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .localization import evaluate_maps, native_cam
from .model import DEMO_WEIGHTS, DemoCNN
from .shapes import CLASS_NAMES, generate

__all__ = ["DATA_SEED_BASE", "INIT_SEED", "TEST_SEED", "TrainConfig", "accuracy", "cam_outside_share", "main", "train"]

INIT_SEED = 0
DATA_SEED_BASE = 1_000_000
TEST_SEED = 2_000_000


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in the JSON metadata)."""

    epochs: int = 10
    chunks_per_epoch: int = 5
    chunk_size: int = 1024
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 5e-4
    threads: int = 2
    test_size: int = 2000
    warmup_clutter: float = 0.2
    clutter_ramp: float = 0.4
    cam_loss: float = 1.0
    cam_chunks: int = 3
    cam_lr: float = 1e-3

    @property
    def total_chunks(self) -> int:
        """Number of freshly generated training chunks."""
        return self.epochs * self.chunks_per_epoch

    @property
    def steps_per_chunk(self) -> int:
        """Optimiser steps per chunk (the last partial batch is dropped)."""
        return self.chunk_size // self.batch_size


def _seed_everything(threads: int) -> None:
    """Fix the global RNG, the thread count and deterministic kernels."""
    torch.manual_seed(INIT_SEED)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _clutter(chunk: int, cfg: TrainConfig) -> float:
    """Curriculum: background clutter rises linearly from ``warmup_clutter`` to 1 over the first ``clutter_ramp``."""
    ramp_chunks = max(1.0, cfg.clutter_ramp * cfg.total_chunks)
    return min(1.0, cfg.warmup_clutter + (1 - cfg.warmup_clutter) * chunk / ramp_chunks)


def _batches(chunk: int, cfg: TrainConfig) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Minibatches ``(images (B, 3, 64, 64), labels (B,), masks (B, 64, 64))`` of chunk ``chunk``, shuffled."""
    data = generate(cfg.chunk_size, DATA_SEED_BASE + chunk, clutter=_clutter(chunk, cfg))
    order = torch.randperm(cfg.chunk_size, generator=torch.Generator().manual_seed(DATA_SEED_BASE + chunk))
    for step in range(cfg.steps_per_chunk):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        yield data.images[idx].contiguous(memory_format=torch.channels_last), data.labels[idx], data.masks[idx]


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(N, 3, H, W)`` images with ``(N,)`` labels."""
    model.eval()
    preds = torch.cat([model(images[i : i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)])
    return (preds == labels).float().mean().item()


def cam_outside_share(model: DemoCNN, feats: Tensor, labels: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean share of the true class's (ReLU) CAM mass at the CAM layer's resolution that lies off the object.

    ``masks`` ``(B, H, W)`` are average-pooled to the ``(h, w)`` of ``feats`` ``(B, C, h, w)`` (fraction of each cell
    on the object). Since the head is GAP -> linear, this CAM is GradCAM's map up to a positive factor.
    """
    cams = torch.relu(torch.einsum("bc,bchw->bhw", model.classifier.weight[labels], feats))
    cover = nnf.adaptive_avg_pool2d(masks.unsqueeze(1).to(feats.dtype), feats.shape[-2:]).squeeze(1)
    outside = (cams * (1 - cover)).flatten(1).sum(dim=1)
    return (outside / (cams.flatten(1).sum(dim=1) + eps)).mean()


def _step(
    model: DemoCNN, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor, Tensor], cam_loss: float
) -> tuple[float, int]:
    """One optimiser step on a ``(images, labels, masks)`` batch; returns (classification loss, correct predictions).

    The loss is the cross-entropy plus ``cam_loss`` times :func:`cam_outside_share` (the object masks come free with
    the synthetic data), which pulls the CAM's mass, hence its peak, onto the object instead of its outline.
    """
    x, y, masks = batch
    feats = model.features(x)
    logits = model.classifier(model.pool(feats).flatten(1))
    ce = nnf.cross_entropy(logits, y)
    loss = ce + cam_loss * cam_outside_share(model, feats, y, masks) if cam_loss > 0 else ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return ce.item(), int((logits.argmax(dim=1) == y).sum())


def _log_chunk(chunk: int, cfg: TrainConfig, loss_sum: float, correct: int, start: float) -> None:
    """Print one chunk's mean loss and training accuracy."""
    seen = cfg.steps_per_chunk * cfg.batch_size
    total = cfg.total_chunks + cfg.cam_chunks
    print(
        f"chunk {chunk + 1}/{total} (clutter {_clutter(chunk, cfg):.2f}, cam loss "
        f"{'on' if chunk >= cfg.total_chunks else 'off'}): loss {loss_sum / cfg.steps_per_chunk:.4f}, "
        f"train acc {correct / seen:.4f}, {time.perf_counter() - start:.0f}s",
        flush=True,
    )


def train(cfg: TrainConfig, log: bool = True, resume_from: str | Path | None = None) -> DemoCNN:
    """Train a fresh :class:`DemoCNN` with AdamW: cross-entropy (one-cycle), then CAM-loss fine-tuning.

    Args:
        cfg: hyper-parameters.
        log: print the loss and accuracy of every chunk.
        resume_from: ``state_dict`` of a phase-1 model; phase 1 is skipped.

    Returns:
        the trained model, in eval mode, contiguous (not channels-last) parameters.

    """
    _seed_everything(cfg.threads)
    model = DemoCNN().to(memory_format=torch.channels_last)
    start = time.perf_counter()
    model.train()
    if resume_from is not None:
        model.load_state_dict(torch.load(resume_from, map_location="cpu", weights_only=True))
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=cfg.total_chunks * cfg.steps_per_chunk, pct_start=0.1
        )
        for chunk in range(cfg.total_chunks):
            loss_sum, correct = 0.0, 0
            for batch in _batches(chunk, cfg):
                loss, hits = _step(model, opt, batch, 0.0)
                sched.step()
                loss_sum, correct = loss_sum + loss, correct + hits
            if log:
                _log_chunk(chunk, cfg, loss_sum, correct, start)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.cam_lr, weight_decay=cfg.weight_decay)
    for chunk in range(cfg.total_chunks, cfg.total_chunks + cfg.cam_chunks):
        loss_sum, correct = 0.0, 0
        for batch in _batches(chunk, cfg):
            loss, hits = _step(model, opt, batch, cfg.cam_loss)
            loss_sum, correct = loss_sum + loss, correct + hits
        if log:
            _log_chunk(chunk, cfg, loss_sum, correct, start)
    return model.to(memory_format=torch.contiguous_format).eval()


def _metadata(model: DemoCNN, cfg: TrainConfig, train_seconds: float) -> dict:
    """Test accuracy and native-CAM localisation on the ``TEST_SEED`` set, plus the run's settings."""
    test = generate(cfg.test_size, TEST_SEED)
    loc = evaluate_maps(native_cam(model, test.images, test.labels), test.masks)
    return {
        "test_accuracy": round(accuracy(model, test.images, test.labels), 4),
        "test_size": cfg.test_size,
        "test_seed": TEST_SEED,
        "native_cam_pointing_game": round(loc.pointing_game, 4),
        "native_cam_energy_in_mask": round(loc.energy_in_mask, 4),
        "init_seed": INIT_SEED,
        "train_data_seeds": [DATA_SEED_BASE, DATA_SEED_BASE + cfg.total_chunks + cfg.cam_chunks - 1],
        "train_images": (cfg.total_chunks + cfg.cam_chunks) * cfg.chunk_size,
        "config": asdict(cfg),
        "classes": list(CLASS_NAMES),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "date": dt.date.today().isoformat(),
        "torch_version": torch.__version__,
    }


def _save(model: DemoCNN, meta: dict, weights: Path) -> None:
    """Write the ``state_dict`` to ``weights`` and the metadata next to it as ``.json``."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(state, weights)
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point: train, evaluate, save; returns the metadata."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS, help="weights path (metadata: same stem, .json)")
    parser.add_argument("--no-save", action="store_true", help="train and evaluate only")
    parser.add_argument("--resume-from", type=Path, default=None, help="phase-1 weights: run phase 2 only")
    args = vars(parser.parse_args(argv))
    out, no_save, resume_from = args.pop("out"), args.pop("no_save"), args.pop("resume_from")
    cfg = TrainConfig(**args)
    start = time.perf_counter()
    model = train(cfg, resume_from=resume_from)
    meta = _metadata(model, cfg, time.perf_counter() - start)
    if resume_from is not None:
        meta["phase2_only_from"] = Path(resume_from).name
    print(json.dumps(meta, indent=2))
    if not no_save:
        _save(model, meta, out)
        print(f"saved {out} and {out.with_suffix('.json')}")
    return meta


if __name__ == "__main__":
    main()
