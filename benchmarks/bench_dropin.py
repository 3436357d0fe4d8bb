"""Every drop-in class of ``pycam_fast.methods`` against its TorchCAM 0.5.0 namesake, side by side in one process.

The two libraries' calls alternate (``--rounds`` rounds, the fastest call of each kept) so drift on a shared machine
hits both alike. Gradient/activation methods: ResNet-18, batch 16, 224x224, hooked forward + CAM. Score-CAM family:
1 image at 112x112 (512 masked forwards per sample and pass; SSCAM/ISCAM with ``num_samples=2`` in both), chunks of
32 in both. Random weights, ``layer4``.

Usage: python benchmarks/bench_dropin.py [--out benchmarks/results/dropin_cpu.md]
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

import torch
import torchcam
import torchcam.methods as tc
import torchvision
from _machine import cpu_name, load_average, report_args, write_lines

import pycam_fast.methods as pf

GRADIENT = ["CAM", "GradCAM", "GradCAMpp", "SmoothGradCAMpp", "XGradCAM", "LayerCAM"]
SCORE = {"ScoreCAM": {}, "SSCAM": {"num_samples": 2}, "ISCAM": {"num_samples": 2}}


def _call(lib: Any, name: str, model: torch.nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> Callable[[], Any]:
    needs_grad = name not in ("CAM", *SCORE)
    extra = {"batch_size": 32} if name in SCORE else {}

    def run() -> None:
        with getattr(lib, name)(model, "layer4", **extra, **kwargs) as cam:
            with torch.set_grad_enabled(needs_grad):
                out = model(x)
            cam(out.argmax(1).tolist(), out if needs_grad else None)

    return run


def _fastest(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = report_args("benchmarks/results/dropin_cpu.md", rounds=3)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x16, x1 = torch.randn(16, 3, 224, 224), torch.randn(1, 3, 112, 112)
    cases = [(name, x16, {}) for name in GRADIENT] + [(name, x1, kw) for name, kw in SCORE.items()]
    rows = []
    for name, x, kwargs in cases:
        ours, theirs = _call(pf, name, model, x, kwargs), _call(tc, name, model, x, kwargs)
        rounds = 1 if name in SCORE else args.rounds
        if name not in SCORE:  # warm-up: oneDNN primitives, first hook install
            ours(), theirs()
        t_tc, t_pf = [], []
        for _ in range(rounds):
            t_tc.append(_fastest(theirs))
            t_pf.append(_fastest(ours))
        best_tc, best_pf = min(t_tc), min(t_pf)
        row = f"| {name} | {x.shape[0]} x {x.shape[-1]}px | {best_tc:.3f} | {best_pf:.3f} | {best_tc / best_pf:.2f}x |"
        print(row, flush=True)
        rows.append(row)
    machine = cpu_name()
    load = load_average()
    lines = [
        "# Drop-in classes vs TorchCAM 0.5.0 (CPU)",
        "",
        f"Date {datetime.date.today()}, {machine}, 2 threads, torch {torch.__version__}, torchcam "
        f"{torchcam.__version__}. ResNet-18 random weights, `layer4`, hooked forward + CAM per call; TorchCAM and "
        f"pycam_fast calls alternate, fastest of {args.rounds} (Score-CAM family: 1 call each). Load average at the "
        f"end: {load}. Command: `python benchmarks/bench_dropin.py`.",
        "",
        "| method | batch x input | TorchCAM s | pycam_fast s | speed-up |",
        "|---|---|---|---|---|",
        *rows,
    ]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
