"""``pycam-fast bench``: a small side-by-side benchmark against the installed peers, in one process.

Cases: Grad-CAM on a random-weights ResNet-18 (TorchCAM, pytorch-grad-cam, the ``pycam_fast.methods`` drop-in,
the ``Explainer`` engine) and batched overlays (:func:`pycam_fast.utils.overlay` against TorchCAM's PIL
``overlay_mask`` applied per image, ``to_pil_image`` conversions included).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .common import add_command

__all__ = ["add_parser", "gradcam_timings", "overlay_timings", "run", "time_call"]

Timings = dict[str, float]


#: ``pycam-fast bench``'s line in ``pycam-fast --help`` and paragraph in its own ``--help``
_HELP = "small side-by-side benchmark against TorchCAM / pytorch-grad-cam (if installed)"
_DESCRIPTION = """
Time Grad-CAM on a random-weights ResNet-18 (TorchCAM, pytorch-grad-cam, the pycam_fast drop-in and Explainer) and
batched overlays (TorchCAM's per-image overlay_mask against pycam_fast.utils.overlay) in this process, on the CPU, and
print markdown tables of the median times and speed-ups; peers that are not installed are left out. For the full suite
with saved JSON, plots and GPU cases, run `pytest benchmarks/ --benchmark-only` from a source checkout.
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``bench`` sub-command."""
    parser = add_command(subparsers, "bench", run, _HELP, _DESCRIPTION)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 repeats instead of 5: about 20 s on 2 CPU cores (the time taken is printed at the end)",
    )
    parser.add_argument("--batch", type=int, default=8, help="Grad-CAM batch size (default: %(default)s)")
    parser.add_argument("--overlay-batch", type=int, default=64, help="overlay batch size (default: %(default)s)")


def time_call(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call.

    Args:
        fn: the call to time.
        repeats: timed calls.
        clock: ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU time of all threads: steadier on a
            shared machine).

    """
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def overlay_timings(
    batch: int, size: int = 224, cam_size: int = 7, repeats: int = 5, clock: Callable[[], float] = time.perf_counter
) -> Timings:
    """Seconds per batch: TorchCAM's ``overlay_mask`` per image (when installed) and the batched ``overlay``.

    Args:
        batch: images per batch.
        size: image side (float images in ``[0, 1]``).
        cam_size: CAM side (upsampled to ``size``).
        repeats: timed calls (median).
        clock: see :func:`time_call`.

    Returns:
        ``{"overlay_mask (TorchCAM, PIL)": s, "overlay": s}`` (the first only if torchcam and torchvision import).

    """
    from ..utils import overlay

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen)
    cams = torch.rand(batch, cam_size, cam_size, generator=gen)
    timings: Timings = {}
    if _installed("torchcam") and _installed("torchvision"):
        from torchcam.utils import overlay_mask
        from torchvision.transforms.functional import to_pil_image

        def per_image() -> None:
            for img, cam in zip(images, cams, strict=True):
                overlay_mask(to_pil_image(img), to_pil_image(cam, mode="F"), alpha=0.5)

        timings["overlay_mask (TorchCAM, PIL)"] = time_call(per_image, max(1, repeats // 2), clock)
    timings["overlay"] = time_call(lambda: overlay(images, cams), repeats, clock)
    return timings


def gradcam_timings(batch: int, size: int = 224, repeats: int = 3) -> Timings:
    """Seconds per batch of Grad-CAM on a random-weights ResNet-18 (``layer4``), for every installed peer."""
    from torchvision.models import resnet18

    from ..engine import Explainer
    from ..methods import GradCAM

    torch.manual_seed(0)
    model = resnet18().eval()
    x = torch.rand(batch, 3, size, size)
    calls: dict[str, Callable[[], object]] = {}
    if _installed("torchcam"):
        import torchcam.methods as tc

        calls["TorchCAM GradCAM"] = lambda: _torchcam_style(tc.GradCAM, model, x)
    if _installed("pytorch_grad_cam"):
        import pytorch_grad_cam

        def pgc() -> None:
            with pytorch_grad_cam.GradCAM(model, [model.layer4]) as cam:
                cam(x, None)

        calls["pytorch-grad-cam GradCAM"] = pgc
    calls["pycam_fast drop-in GradCAM"] = lambda: _torchcam_style(GradCAM, model, x)
    explainer = Explainer(model, "gradcam", "layer4")
    calls["pycam_fast Explainer"] = lambda: explainer(x)
    return {name: time_call(fn, repeats) for name, fn in calls.items()}


def _torchcam_style(cls: Any, model: torch.nn.Module, x: torch.Tensor) -> None:
    with cls(model, "layer4") as cam:
        out = model(x)
        cam(out.argmax(1).tolist(), out)


def format_table(title: str, timings: Timings) -> str:
    """A markdown table: implementation, ms, speed-up against the first (baseline) row."""
    base = next(iter(timings.values()))
    lines = [f"{title}", "", "| implementation | ms | speed-up |", "|---|---:|---:|"]
    lines += [f"| {name} | {1000 * s:.1f} | {base / s:.2f}x |" for name, s in timings.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the tables; returns 0."""
    import logging

    logging.disable(logging.WARNING)  # TorchCAM logs its layer choice on every construction
    repeats = 2 if args.quick else 5
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; median of {repeats} runs")
    if _installed("torchvision"):
        title = f"Grad-CAM, ResNet-18 (random weights), batch {args.batch} at 224x224:"
        print(format_table(title, gradcam_timings(args.batch, repeats=repeats)))
    else:
        print("Grad-CAM case skipped: needs torchvision")
    print()
    title = f"Overlays, batch {args.overlay_batch}, 224x224 images, 7x7 maps:"
    print(format_table(title, overlay_timings(args.overlay_batch, repeats=repeats)))
    print(f"\nbench finished in {time.perf_counter() - start:.1f} s")
    return 0
