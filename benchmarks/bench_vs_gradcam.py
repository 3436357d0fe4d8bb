"""pycam_fast.compat.pytorch_grad_cam vs pytorch-grad-cam 1.5.7, side by side in one process (ResNet-18, 224x224).

Usage: python benchmarks/bench_vs_gradcam.py [--threads 2] [--repeats 3] [--out benchmarks/results/vs_gradcam_cpu.md]

Each case runs both libraries on the same model, input and targets (targets=None: each image's top class), reports
the median wall time over ``--repeats`` calls after one warm-up call, images per second, the speed-up, the
largest absolute difference between the two outputs and the route pycam_fast took (``cam.last_model`` /
``cam.last_path``: the optimised private copy or the model itself; closed-form, tail-autograd or no-grad).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import statistics
import subprocess
import time
from importlib.metadata import version

import numpy as np
import pytorch_grad_cam as pgc
import torch
import torchvision
from _machine import random_resnet18, write_lines

import pycam_fast
from pycam_fast.compat import pytorch_grad_cam as ours

CASES = [  # (method, batch, repeats override)
    ("GradCAM", 16, None),
    ("GradCAMPlusPlus", 16, None),
    ("LayerCAM", 16, None),
    ("XGradCAM", 16, None),
    ("HiResCAM", 16, None),
    ("GradCAMElementWise", 16, None),
    ("EigenCAM", 16, None),
    ("ScoreCAM", 1, 1),
    ("AblationCAM", 1, 1),
]


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _make(lib, name: str, model: torch.nn.Module):
    cam = getattr(lib, name)(model, [model.layer4[-1]])
    if name in ("ScoreCAM", "AblationCAM"):
        cam.batch_size = 64
    return cam


def _time_pair(name: str, model: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: bool) -> tuple:
    """Median seconds per call of (grad-cam, pycam_fast), calls interleaved so load changes hit both alike."""
    cams = [_make(pgc, name, model), _make(ours, name, model)]
    times: list[list[float]] = [[], []]
    results = [None, None]
    route = "?"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # pytorch-grad-cam's tqdm bars
            for i, cam in enumerate(cams):
                if warmup:
                    results[i] = cam(x, None)
            for _ in range(repeats):
                for i, cam in enumerate(cams):
                    start = time.perf_counter()
                    results[i] = cam(x, None)
                    times[i].append(time.perf_counter() - start)
        route = f"{cams[1].last_model}, {cams[1].last_path}".replace("_", " ")
    finally:
        for cam in cams:
            cam.__exit__(None, None, None)
    return statistics.median(times[0]), statistics.median(times[1]), results[0], results[1], route


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/vs_gradcam_cpu.md")
    args = parser.parse_args()
    model = random_resnet18(args.threads)
    rows = []
    load_before = os.getloadavg()[0]
    for name, batch, repeats in CASES:
        x = torch.randn(batch, 3, 224, 224)
        t_theirs, t_ours, theirs, mine, route = _time_pair(
            name, model, x, repeats or args.repeats, warmup=repeats is None
        )
        diff = float(np.abs(theirs - mine).max())
        rows.append((name, batch, batch / t_theirs, batch / t_ours, t_theirs / t_ours, diff, route))
        print(
            f"{name:16s} batch {batch:2d}: grad-cam {batch / t_theirs:7.2f} img/s, pycam_fast "
            f"{batch / t_ours:7.2f} img/s, x{t_theirs / t_ours:.2f}, max|diff| {diff:.1e}",
            flush=True,
        )
    args.load = (load_before, os.getloadavg()[0])
    _write(args, rows)


def _write(args: argparse.Namespace, rows: list[tuple]) -> None:
    lines = [
        "# pycam_fast vs pytorch-grad-cam (CPU)",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {_cpu_model()}, {torch.get_num_threads()} torch threads (`torch.set_num_threads({args.threads})`)",
        f"- versions: torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"grad-cam {version('grad-cam')}, pycam_fast {getattr(pycam_fast, '__version__', 'dev')} (backend auto)",
        "- model: torchvision ResNet-18 (random init, eval), input 224x224, target layer `layer4[-1]`, targets=None",
        f"- timing: median of {args.repeats} interleaved calls after one warm-up each (ScoreCAM / AblationCAM: 1 call, "
        "no warm-up), both libraries in the same process; `batch_size=64` for Score-CAM / Ablation-CAM in both",
        f"- 1-min load average before / after: {args.load[0]:.1f} / {args.load[1]:.1f} (the 2 cores are shared: "
        "absolute rates are noisy, the two libraries' calls are interleaved so ratios are fairer)",
        "- command: `python benchmarks/bench_vs_gradcam.py`",
        "",
        "| method | batch | grad-cam img/s | pycam_fast img/s | speed-up | max abs diff | pycam_fast route |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {n} | {b} | {a:.2f} | {o:.2f} | {s:.2f}x | {d:.1e} | {r} |" for n, b, a, o, s, d, r in rows]
    write_lines(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
