"""The pytorch-grad-cam drop-in's newer classes vs grad-cam 1.5.7, side by side in one process.

ResNet-18 (10 classes, random weights and batch-norm statistics), batch 16 at 64x64, one thread; each call is timed
after a warm-up and the fastest of a few calls is kept (the least disturbed on a shared machine).

    python benchmarks/bench_gradcam_new.py [--out benchmarks/results/gradcam_new_cpu.md] [NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import warnings
from pathlib import Path

import numpy as np
import pytorch_grad_cam as theirs
import pytorch_grad_cam.base_cam
import torch
from _machine import fastest, load_average, random_resnet18, ratio_table, write_report
from pytorch_grad_cam.utils import model_targets as their_targets

from pycam_fast.compat import pytorch_grad_cam as ours
from pycam_fast.compat.pytorch_grad_cam import base_cam as _base_cam  # noqa: F401 (ours.base_cam)
from pycam_fast.compat.pytorch_grad_cam.utils import model_targets as our_targets


def start(doc: str, out: str, only: str | None = None) -> tuple[argparse.Namespace, torch.nn.Module]:
    """A grad-cam benchmark's start: its command line, no warnings, one thread and the model.

    Args:
        doc: the script's docstring (its first line describes the command).
        out: the default ``--out`` report path.
        only: with the positional ``NAME ...`` (run only the cases whose name contains one of these): what the cases
            are called in its help (``"cases"``, ``"metrics"``).

    Returns:
        the parsed arguments and a ResNet-18 with 10 classes, random weights and batch-norm statistics.

    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if only is not None:
        parser.add_argument("only", nargs="*", help=f"run only the {only} whose name contains one of these")
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    return args, random_resnet18(1, num_classes=10, random_batch_norm=True)


def _mean_grad_weights(self, input_tensor, target_layer, targets, activations, grads):
    return np.mean(grads, axis=(2, 3))


def main() -> None:
    args, model = start(__doc__, "benchmarks/results/gradcam_new_cpu.md", "cases")
    x = torch.randn(16, 3, 64, 64)
    layers = [model.layer4[-1]]
    two_layers = [model.layer3[-1], model.layer4[-1]]
    subclass = {
        lib: type("MeanGrad", (lib.base_cam.BaseCAM,), {"get_cam_weights": _mean_grad_weights})
        for lib in (theirs, ours)
    }
    cases = [
        ("FullGrad", lambda lib: lib.FullGrad(model, []), None),
        ("BaseCAM subclass (get_cam_weights)", lambda lib: subclass[lib](model, layers), None),
        ("ShapleyCAM (ClassifierOutputReST)", lambda lib: lib.ShapleyCAM(model, layers), "rest"),
        ("KPCA_CAM (layer3)", lambda lib: lib.KPCA_CAM(model, [model.layer3[-1]]), None),
        ("SegEigenCAM", lambda lib: lib.SegEigenCAM(model, layers), None),
        ("RandomCAM", lambda lib: lib.RandomCAM(model, layers), None),
        ("GradCAM, eigen_smooth=True", lambda lib: lib.GradCAM(model, layers), "eigen"),
        ("EigenGradCAM", lambda lib: lib.EigenGradCAM(model, layers), None),
        ("FinerCAM (GradCAM base)", lambda lib: lib.FinerCAM(model, layers), None),
        ("RefineCAM (GradCAM++ base, layer3 + layer4)", lambda lib: lib.RefineCAM(model, two_layers), None),
    ]
    rows = []
    for name, make, kind in cases:
        if args.only and not any(o in name for o in args.only):
            continue
        times = []
        for lib, targets in ((theirs, their_targets), (ours, our_targets)):
            cam = make(lib)
            target = [targets.ClassifierOutputReST(1)] * len(x) if kind == "rest" else None
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                eigen = kind == "eigen"
                times.append(fastest(lambda cam=cam, t=target, e=eigen: cam(x, t, eigen_smooth=e), 3))
        rows.append((name, *times))
        print(f"{name:40s} grad-cam {times[0] * 1e3:8.1f} ms  ours {times[1] * 1e3:8.1f} ms", flush=True)
    if not args.only or any("Guided" in o for o in args.only):
        theirs_gb = theirs.GuidedBackpropReLUModel(copy.deepcopy(model))  # grad-cam's rewrites the model's ReLUs
        ours_gb = ours.GuidedBackpropReLUModel(model)
        rows.append(
            (
                "GuidedBackpropReLUModel (category 1)",
                fastest(lambda: theirs_gb(x, 1), 3),
                fastest(lambda: ours_gb(x, 1), 3),
            )
        )
    setup = (
        f"1 thread, torch {torch.__version__}; load average "
        f"{load_average()}. ResNet-18 (10 classes, random weights and BN statistics), batch 16 at 64x64, fastest of "
        "3 calls after a warm-up, both libraries in one process (`python benchmarks/bench_gradcam_new.py`)."
    )
    write_report(
        args.out, "pytorch-grad-cam drop-in, newer classes vs grad-cam 1.5.7 (CPU)", setup, ratio_table("class", rows)
    )


if __name__ == "__main__":
    main()
