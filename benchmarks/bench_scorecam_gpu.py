"""Score-CAM on a GPU, side by side in one process: TorchCAM 0.5.0 vs the drop-in class vs the engine.

Usage: ``python benchmarks/bench_scorecam_gpu.py [--images 4] [--out FILE]`` (needs CUDA; TorchCAM optional).
ResNet-18 (random weights), 224x224, target ``layer4`` (512 masked forwards per image). Timings are synchronised
wall times of one call after a warm-up call; ratios are TorchCAM time / our time.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pycam_fast import Explainer, methods


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def _extractor_call(cls: type, model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> Callable:
    def run() -> torch.Tensor:
        with cls(model, "layer4", batch_size=256) as cam:
            with torch.no_grad():
                model(x)
            return cam(classes)[0]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scorecam_gpu.md"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().cuda()
    x = torch.rand(args.images, 3, 224, 224, device="cuda")
    classes = list(range(args.images))
    rows: list[tuple[str, float, torch.Tensor]] = []
    try:
        import torchcam.methods as tcm

        theirs = _timed(_extractor_call(tcm.ScoreCAM, model, x, classes))
        rows.append(("TorchCAM 0.5.0 ScoreCAM (batch_size=256)", *theirs))
    except ImportError:
        pass
    ours = _timed(_extractor_call(methods.ScoreCAM, model, x, classes))
    rows.append(("pycam_fast drop-in ScoreCAM (batch_size=256)", *ours))
    for precision, cl in (("fp32", False), ("fp32", True), ("bf16", True)):
        explainer = Explainer(model, "scorecam", "layer4", output_size=None, precision=precision, channels_last=cl)
        name = f"Explainer scorecam {precision}{' channels_last' if cl else ''}"
        rows.append((name, *_timed(lambda e=explainer: e(x, classes))))
    base_t, base_map = rows[0][1], rows[0][2]
    lines = [
        "# Score-CAM on GPU (ResNet-18, layer4, 224x224)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; device: {torch.cuda.get_device_name()}",
        f"- torch {torch.__version__}; {args.images} images; one synchronised call after a warm-up",
        "",
        f"| variant | s / image | speed-up vs {rows[0][0].split(' (')[0]} | max abs diff of the map |",
        "|---|---|---|---|",
    ]
    for name, seconds, cam in rows:
        diff = (cam.float() - base_map.float()).abs().max().item()
        lines.append(f"| {name} | {seconds / args.images:.4f} | {base_t / seconds:.2f}x | {diff:.2e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
