"""The pytorch-grad-cam drop-in's ``metrics`` package vs grad-cam 1.5.7's, side by side in one process.

ResNet-18 (10 classes, random weights and batch-norm statistics), batch 16 at 64x64, one thread, softmax targets,
Grad-CAM maps of ``layer4`` as the evaluated CAMs; each metric is timed after a warm-up and the fastest of a few
calls is kept (the least disturbed on a shared machine). The largest difference between the two results (same torch
seed, so the same ROAD noise) is recorded too.

    python benchmarks/bench_gradcam_metrics.py [--out benchmarks/results/gradcam_metrics_cpu.md] [NAME ...]
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_grad_cam
import scipy
import torch
from _machine import fastest, load_average, ratio_table, write_report
from bench_gradcam_new import start  # the command line and the ResNet-18 (random weights and BN statistics)
from pytorch_grad_cam.metrics import arcc as t_arcc
from pytorch_grad_cam.metrics import cam_mult_image as t_mult
from pytorch_grad_cam.metrics import road as t_road
from pytorch_grad_cam.utils import model_targets as t_targets

import pycam_fast
from pycam_fast.compat import pytorch_grad_cam as ours
from pycam_fast.compat.pytorch_grad_cam.metrics import arcc as o_arcc
from pycam_fast.compat.pytorch_grad_cam.metrics import cam_mult_image as o_mult
from pycam_fast.compat.pytorch_grad_cam.metrics import road as o_road
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as o_targets

BATCH, SIZE = 16, 64


def _cases(model: torch.nn.Module) -> list[tuple[str, Callable[[], Any], Callable[[], Any], int]]:
    """``(name, grad-cam metric, ours, repeats)``: each metric takes ``(x, cams, targets, model)``."""
    layers = [model.layer4[-1]]
    return [
        ("CamMultImageConfidenceChange", t_mult.CamMultImageConfidenceChange, o_mult.CamMultImageConfidenceChange, 5),
        ("DropInConfidence", t_mult.DropInConfidence, o_mult.DropInConfidence, 5),
        ("IncreaseInConfidence", t_mult.IncreaseInConfidence, o_mult.IncreaseInConfidence, 5),
        (
            "ROADMostRelevantFirst(80)",
            lambda: t_road.ROADMostRelevantFirst(80),
            lambda: o_road.ROADMostRelevantFirst(80),
            3,
        ),
        (
            "ROADLeastRelevantFirst(20)",
            lambda: t_road.ROADLeastRelevantFirst(20),
            lambda: o_road.ROADLeastRelevantFirst(20),
            3,
        ),
        (
            "ROADMostRelevantFirstAverage (9)",
            t_road.ROADMostRelevantFirstAverage,
            o_road.ROADMostRelevantFirstAverage,
            2,
        ),
        (
            "ROADLeastRelevantFirstAverage (9)",
            t_road.ROADLeastRelevantFirstAverage,
            o_road.ROADLeastRelevantFirstAverage,
            2,
        ),
        ("ROADCombined (9 percentiles)", t_road.ROADCombined, o_road.ROADCombined, 2),
        (
            "ARCC (GradCAM, 4 ROAD percentiles)",
            lambda: t_arcc.ARCC(pytorch_grad_cam.GradCAM(model, layers)),
            lambda: o_arcc.ARCC(ours.GradCAM(model, layers)),
            2,
        ),
    ]


def main() -> None:
    args, model = start(__doc__, "benchmarks/results/gradcam_metrics_cpu.md", "metrics")
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    classes = [i % 10 for i in range(BATCH)]
    their_t = [t_targets.ClassifierOutputSoftmaxTarget(c) for c in classes]
    our_t = [o_targets.ClassifierOutputSoftmaxTarget(c) for c in classes]
    cams = pytorch_grad_cam.GradCAM(model, [model.layer4[-1]])(
        x, [t_targets.ClassifierOutputTarget(c) for c in classes]
    )
    rows = []
    for name, make_theirs, make_ours, repeats in _cases(model):
        if args.only and not any(o in name for o in args.only):
            continue
        theirs_metric, ours_metric = make_theirs(), make_ours()
        results = []
        for metric, targets in ((theirs_metric, their_t), (ours_metric, our_t)):
            torch.manual_seed(1)
            results.append(np.asarray(metric(x, cams, targets, model)))
        diff = float(np.nanmax(np.abs(results[0] - results[1])))
        t_theirs = fastest(lambda m=theirs_metric: m(x, cams, their_t, model), repeats)
        t_ours = fastest(lambda m=ours_metric: m(x, cams, our_t, model), repeats)
        rows.append((name, t_theirs, t_ours, diff))
        print(f"{name:38s} grad-cam {t_theirs * 1e3:9.1f} ms  ours {t_ours * 1e3:8.1f} ms  max|diff| {diff:.1e}")
    setup = (
        "1 thread (torch.set_num_threads(1)); Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"pycam_fast {getattr(pycam_fast, '__version__', '?')}, grad-cam 1.5.7. Load average {load_average()} (2 "
        "cores: above 1, other jobs shared them and absolute times are noisier). ResNet-18 (10 classes, random "
        f"weights and BN statistics), batch {BATCH} at {SIZE}x{SIZE}, `ClassifierOutputSoftmaxTarget`, grad-cam "
        "Grad-CAM maps of `layer4` as the CAMs; fastest of N calls after a warm-up, both libraries in one process "
        "(`python benchmarks/bench_gradcam_metrics.py`). max|diff|: the largest difference between the two "
        "results from the same torch seed (same ROAD noise)."
    )
    write_report(
        args.out,
        "pytorch-grad-cam drop-in `metrics` vs grad-cam 1.5.7 (CPU)",
        setup,
        ratio_table("metric", [(n, a, b, f"{d:.1e}") for n, a, b, d in rows], ("max abs diff",)),
    )


if __name__ == "__main__":
    main()
