"""The pytorch-grad-cam drop-in's SESS and Deep Feature Factorization vs grad-cam 1.5.7's, side by side in one process.

ResNet-18 (10 classes, random weights and batch-norm statistics), one thread; each call is timed after a warm-up and
the fastest of a few calls is kept (the least disturbed on a shared machine). SESS: Grad-CAM of ``layer4`` on the
windows, default options (12 scales), and a ``pool="max"`` / 6-scale variant; the maps' largest difference is
recorded. DFF: ``layer4`` (grad-cam: scikit-learn's NMF on the host; ours: the same coordinate descent from the same
start in the ``pycam_fast::nmf`` op); the largest difference of the concepts (relative to their magnitude) and of the
normalised heatmaps is recorded.

    python benchmarks/bench_gradcam_sess_dff.py [--out benchmarks/results/gradcam_sess_dff_cpu.md]
"""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytorch_grad_cam as theirs
import sklearn
import torch
from _machine import fastest, load_average, ratio_table, write_report
from bench_gradcam_new import start
from matplotlib import cm
from PIL import Image

from pycam_fast.compat import pytorch_grad_cam as ours

REPEATS = 3


def _sess_rows(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, float, float, str]]:
    rows = []
    layers = [model.layer4[-1]]
    cases = (("SESS (GradCAM, defaults)", {}), ("SESS (GradCAM, pool=max, 6 scales)", {"pool": "max", "num_scales": 6}))
    for name, kwargs in cases:
        theirs_cam = theirs.SESS(model, layers, **kwargs)
        ours_cam = ours.SESS(model, layers, **kwargs)
        diff = float(np.abs(theirs_cam(x) - ours_cam(x)).max())
        t_theirs = fastest(lambda c=theirs_cam: c(x), REPEATS)
        t_ours = fastest(lambda c=ours_cam: c(x), REPEATS)
        theirs_cam.base_cam.activations_and_grads.release()
        ours_cam.release()
        rows.append((name, t_theirs, t_ours, f"max abs diff {diff:.1e}"))
        print(rows[-1], flush=True)
    return rows


def _dff_difference(theirs_out: tuple, ours_out: tuple) -> str:
    """The largest concept difference over the largest concept, and the largest heatmap difference."""
    concepts = np.abs(theirs_out[0] - ours_out[0]).max() / np.abs(theirs_out[0]).max()
    maps = max(float(np.abs(a - b).max()) for a, b in zip(theirs_out[1], ours_out[1], strict=True))
    return f"concepts {concepts:.1e} (relative), heatmaps {maps:.1e}"


def _dff_rows(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, float, float, str]]:
    rows = []
    for k in (5, 16):
        their_call = theirs.DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)
        our_call = ours.DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)
        t_theirs = fastest(lambda f=their_call, k=k: f(x, k), REPEATS)
        t_ours = fastest(lambda f=our_call, k=k: f(x, k), REPEATS)
        note = _dff_difference(their_call(x, k), our_call(x, k))
        rows.append((f"DeepFeatureFactorization (K={k}, with classifier)", t_theirs, t_ours, note))
        print(rows[-1], flush=True)
    return rows


def _run_dff_row(model: torch.nn.Module) -> tuple[str, float, float, str]:
    model.config = SimpleNamespace(id2label={i: f"category {i}" for i in range(10)})
    rgb = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image, tensor = Image.fromarray(rgb), torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0).float()
    cm.get_cmap = matplotlib.colormaps.get_cmap  # grad-cam 1.5.7 calls it; Matplotlib >= 3.9 removed it
    args = (model, model.layer4, model.fc, image, tensor)
    t_theirs = fastest(lambda: theirs.run_dff_on_image(*args, reshape_transform=None), REPEATS)
    t_ours = fastest(lambda: ours.run_dff_on_image(*args), REPEATS)
    del model.config
    return ("run_dff_on_image (K=5, one 96x96 image, legend drawn)", t_theirs, t_ours, "")


def main() -> None:
    args, model = start(__doc__, "benchmarks/results/gradcam_sess_dff_cpu.md")
    gen = torch.Generator().manual_seed(0)
    rows = _sess_rows(model, torch.randn(2, 3, 64, 64, generator=gen))
    rows += _dff_rows(model, torch.randn(4, 3, 96, 96, generator=gen))
    rows.append(_run_dff_row(model))
    print(rows[-1], flush=True)
    setup = (
        f"1 thread, torch {torch.__version__}, grad-cam 1.5.7, "
        f"scikit-learn {sklearn.__version__}; load average {load_average()} (2 cores: above 1, other jobs shared "
        "them). ResNet-18 (10 classes, random weights and BN statistics), `layer4`; SESS on 2 images of 64x64, DFF "
        f"on 4 images of 96x96; fastest of {REPEATS} calls after a warm-up, both libraries in one process "
        "(`python benchmarks/bench_gradcam_sess_dff.py`)."
    )
    write_report(
        args.out,
        "pytorch-grad-cam drop-in: SESS and Deep Feature Factorization vs grad-cam 1.5.7 (CPU)",
        setup,
        ratio_table("case", rows, ("check",)),
    )


if __name__ == "__main__":
    main()
