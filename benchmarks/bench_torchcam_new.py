"""TorchCAM 0.5.0's newer API (LeGrad, RefineCAM, FinerCAM, both metrics) against pycam_fast's, in one process.

Batch 16, random weights, after one warm-up call each, ``--rounds`` rounds in alternating order (the fastest
of each kept):

- LeGrad: a ViT-S-like torchvision ``VisionTransformer`` (112x112, patch 16, 6 blocks, 384 dims), last 4 blocks;
  hooked forward + map.
- RefineCAM (Grad-CAM++ base, ``layer2..4``) and FinerCAM (Grad-CAM base, ``layer4``): ResNet-18 at 224x224;
  hooked forward + map.
- ClassificationMetric and DeletionInsertionMetric (``steps=10``; TorchCAM's default ``batch_size=32``, pycam_fast's
  memory budget): ResNet-18 at 96x96 with each library's own Grad-CAM on ``layer4``; one ``update``.

Usage (from the repository root): python benchmarks/bench_torchcam_new.py [--out ...md] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import time
from collections.abc import Callable
from typing import Any

import torch
import torchcam
import torchcam.methods as tc_methods
import torchcam.metrics as tc_metrics
import torchvision
from _machine import cpu_name, load_average

import pycam_fast.compat.torchcam.methods as pf_methods
import pycam_fast.compat.torchcam.metrics as pf_metrics


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _extractor_call(lib: Any, name: str, model: torch.nn.Module, x: torch.Tensor, **kw: Any) -> Callable[[], Any]:
    def run() -> None:
        with getattr(lib, name)(model, **kw) as cam:
            out = model(x)
            cam(out.argmax(1).tolist(), out)

    return run


def _metric_call(methods: Any, metrics: Any, name: str, model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """One ``update`` of a metric built once (on the library's own copy of the model, hooked by its extractor)."""
    model = copy.deepcopy(model)
    kw = {"steps": 10} if name == "DeletionInsertionMetric" else {}
    metric = getattr(metrics, name)(methods.GradCAM(model, "layer4"), torch.nn.Softmax(-1), **kw)

    def run() -> None:
        metric.update(x)
        metric.summary()

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/torchcam_new_cpu.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.batch
    resnet = torchvision.models.resnet18().eval()
    vit = torchvision.models.VisionTransformer(
        image_size=112, patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536
    ).eval()
    x224, x96, x112 = torch.randn(n, 3, 224, 224), torch.randn(n, 3, 96, 96), torch.randn(n, 3, 112, 112)
    blocks = list(vit.encoder.layers)[-4:]
    cases: list[tuple[str, Callable[[Any, Any], Callable[[], Any]]]] = [
        ("LeGrad", lambda m, _: _extractor_call(m, "LeGrad", vit, x112, target_layer=blocks)),
        (
            "RefineCAM",
            lambda m, _: _extractor_call(m, "RefineCAM", resnet, x224, target_layer=["layer2", "layer3", "layer4"]),
        ),
        ("FinerCAM", lambda m, _: _extractor_call(m, "FinerCAM", resnet, x224, target_layer="layer4")),
        ("ClassificationMetric", lambda m, k: _metric_call(m, k, "ClassificationMetric", resnet, x96)),
        ("DeletionInsertionMetric", lambda m, k: _metric_call(m, k, "DeletionInsertionMetric", resnet, x96)),
    ]
    rows = []
    firsts: dict[str, tuple[float, float]] = {}
    for name, make in cases:
        theirs, ours = make(tc_methods, tc_metrics), make(pf_methods, pf_metrics)
        first = (_timed(theirs), _timed(ours))  # warm-up; pycam_fast's metrics take their private model copy here
        firsts[name] = first
        t_theirs, t_ours = [], []
        for r in range(args.rounds):  # the order alternates: neither library always runs right after the other
            for fn, times in ((theirs, t_theirs), (ours, t_ours))[:: 1 if r % 2 == 0 else -1]:
                times.append(_timed(fn))
        best_t, best_o = min(t_theirs), min(t_ours)
        rows.append((name, best_t, best_o))
        print(
            f"{name:24s} torchcam {best_t * 1e3:9.1f} ms   pycam_fast {best_o * 1e3:9.1f} ms   x{best_t / best_o:.2f}"
        )
    lines = [
        "# TorchCAM 0.5.0 newer API vs pycam_fast (CPU)",
        "",
        f"- date: {datetime.date.today()}; CPU: {cpu_name()}; torch threads: {torch.get_num_threads()}; "
        f"load average at the end: {load_average()}",
        f"- torch {torch.__version__}, torchcam {torchcam.__version__}; batch {n}; fastest of {args.rounds} "
        "rounds in alternating order after one warm-up call each; random weights",
        "- LeGrad: ViT (112x112, patch 16, 6 blocks, 384 dims, 6 heads), last 4 blocks; RefineCAM (GradCAMpp base, "
        "layer2-4) and FinerCAM (GradCAM base, layer4): ResNet-18 224x224; metrics: ResNet-18 96x96, each "
        "library's GradCAM on layer4, softmax scores, DeletionInsertion steps=10 (TorchCAM batch_size=32, "
        "pycam_fast memory budget)",
        "",
        "| case | TorchCAM 0.5.0 (ms) | pycam_fast (ms) | speed-up |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {t * 1e3:.1f} | {o * 1e3:.1f} | {t / o:.2f}x |" for name, t, o in rows),
        "",
        "Metrics are built once and ``update`` is timed after one warm-up update (a metric is updated batch after "
        "batch over a data set); the first update, which for pycam_fast includes taking the private, batchnorm-"
        "folded model copy, took (TorchCAM / pycam_fast): "
        + "; ".join(f"{k} {a * 1e3:.0f} / {b * 1e3:.0f} ms" for k, (a, b) in firsts.items() if "Metric" in k)
        + ".",
        "",
    ]
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
