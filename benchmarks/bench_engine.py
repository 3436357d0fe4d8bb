"""Engine throughput against TorchCAM 0.5.0 and pytorch-grad-cam 1.5.7, side by side in one process.

Usage: python benchmarks/bench_engine.py [--out benchmarks/results/engine_cpu.md]
ResNet-18 (random weights), 224x224, 2 threads. Gradient methods: batch 16; the slow perturbation peers run on
few images (see the table).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import subprocess
import time
from collections.abc import Callable

import torch
import torchvision

logging.disable(logging.WARNING)


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Mean seconds per call after one warm-up call; ``repeats=0``: the single (cold) call is timed."""
    if repeats == 0:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    fn()  # warm-up (tracing, private copy, oneDNN primitives)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _gradient_rows(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[tuple[str, float, str]]:
    import pytorch_grad_cam
    import torchcam.methods as tc

    from pycam_fast.engine import Explainer
    from pycam_fast.methods import GradCAM

    def nograd() -> None:
        with torch.no_grad():
            model(x)

    def torchcam() -> None:
        with tc.GradCAM(model, "layer4") as cam:
            out = model(x)
            cam(out.argmax(1).tolist(), out)

    def pgc() -> None:
        with pytorch_grad_cam.GradCAM(model, [model.layer4]) as cam:
            cam(x, None)

    def drop_in() -> None:
        with GradCAM(model, "layer4") as cam:
            out = model(x)
            cam(out.argmax(1).tolist(), out)

    # channels_last: the engine's private copy in NHWC, the recommended CPU setting (same numbers to rounding)
    engine = {m: Explainer(model, m, "layer4", channels_last=True) for m in ("gradcam", "gradcampp", "layercam")}
    engine_l3 = Explainer(model, "gradcam", "layer3", channels_last=True)
    n = x.shape[0]
    rows = [("no-grad forward", _timed(nograd, repeats), f"{n} img")]
    rows.append(("TorchCAM GradCAM", _timed(torchcam, repeats), f"{n} img"))
    rows.append(("pytorch-grad-cam GradCAM", _timed(pgc, 1), f"{n} img"))
    rows.append(("pycam_fast GradCAM (drop-in)", _timed(drop_in, repeats), f"{n} img"))
    for name, exp in engine.items():
        rows.append((f"engine {name} (layer4, closed form, cl)", _timed(lambda e=exp: e(x), repeats), f"{n} img"))
    rows.append(("engine gradcam (layer3, tail autograd, cl)", _timed(lambda: engine_l3(x), repeats), f"{n} img"))
    return rows


def _perturbation_rows(model: torch.nn.Module, x1: torch.Tensor) -> list[tuple[str, float, str]]:
    import pytorch_grad_cam
    import torchcam.methods as tc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from pycam_fast.engine import Explainer
    from pycam_fast.methods import ScoreCAM
    from pycam_fast.methods.ablation import AblationCAM

    cls = int(model(x1).argmax())

    def torchcam_score() -> None:
        with tc.ScoreCAM(model, "layer4", batch_size=32) as cam:
            with torch.no_grad():
                model(x1)
            cam(cls)

    def drop_in_score() -> None:
        with ScoreCAM(model, "layer4", batch_size=32) as cam:
            with torch.no_grad():
                model(x1)
            cam(cls)

    def pgc_ablation() -> None:
        with pytorch_grad_cam.AblationCAM(model, [model.layer4], batch_size=32) as cam:
            cam(x1, [ClassifierOutputTarget(cls)])

    def drop_in_ablation() -> None:
        with AblationCAM(model, "layer4") as cam:
            out = model(x1)
            cam(cls, out)

    fp32 = Explainer(model, "scorecam", "layer4")
    fast = Explainer(model, "scorecam", "layer4", precision="bf16", channels_last=True)
    topk = Explainer(model, "scorecam", "layer4", precision="bf16", channels_last=True, top_k=64)
    abl = Explainer(model, "ablationcam", "layer4")
    return [
        ("TorchCAM ScoreCAM", _timed(torchcam_score, 0), "1 img"),
        ("pycam_fast ScoreCAM (drop-in)", _timed(drop_in_score, 0), "1 img"),
        ("engine scorecam fp32 (folded bn)", _timed(lambda: fp32(x1, cls), 1), "1 img"),
        ("engine scorecam bf16 + channels_last", _timed(lambda: fast(x1, cls), 1), "1 img"),
        ("engine scorecam bf16 + cl, top_k=64 (approx.)", _timed(lambda: topk(x1, cls), 1), "1 img"),
        ("pytorch-grad-cam AblationCAM", _timed(pgc_ablation, 0), "1 img"),
        ("pycam_fast AblationCAM (drop-in, tail)", _timed(drop_in_ablation, 3), "1 img"),
        ("engine ablationcam (tail)", _timed(lambda: abl(x1, cls), 3), "1 img"),
    ]


def _fidelity(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    from pycam_fast.engine import Explainer

    exact = Explainer(model, "scorecam", "layer4", output_size=None)
    out = []
    for prec, k in (("bf16", None), ("bf16", 128), ("bf16", 64)):
        approx = Explainer(model, "scorecam", "layer4", output_size=None, precision=prec, channels_last=True, top_k=k)
        a, b = exact(x).flatten(1), approx(x).flatten(1)
        ra, rb = a.argsort(1).argsort(1).float(), b.argsort(1).argsort(1).float()
        rho = torch.stack([torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(ra, rb, strict=True)])
        out.append(f"| {prec}, top_k={k} | {rho.mean():.4f} | {(a - b).abs().max():.4f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/engine_cpu.md")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    grad = _gradient_rows(model, x, args.repeats)
    print(grad, flush=True)
    pert = _perturbation_rows(model, x[:1])
    print(pert, flush=True)
    fid = _fidelity(model, x[:2])
    import pytorch_grad_cam  # noqa: F401
    import torchcam

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "?")
    tc_time = dict((r[0], r[1]) for r in grad + pert)
    lines = [
        "# Engine throughput, CPU",
        "",
        f"Date {datetime.date.today()}, {model_name}, 2 threads, torch {torch.__version__}, torchcam "
        f"{torchcam.__version__}, pytorch-grad-cam 1.5.7. ResNet-18 random weights, 224x224. Gradient methods: batch "
        f"{args.batch}, mean of {args.repeats} calls after a warm-up (pytorch-grad-cam: 1 call). Perturbation methods: "
        "1 image; peers and drop-in ScoreCAM: one cold call, engine: mean after a warm-up. The machine's 2 "
        "cores were shared with other jobs: compare ratios, not absolute numbers.",
        "",
        "## Gradient methods (layer4)",
        "",
        "| variant | s/call | img/s | vs TorchCAM GradCAM |",
        "|---|---|---|---|",
    ]
    ref = tc_time["TorchCAM GradCAM"]
    lines += [f"| {n} | {t:.3f} | {args.batch / t:.1f} | {ref / t:.2f}x |" for n, t, _ in grad]
    lines += ["", "## Perturbation methods (layer4, 1 image)", "", "| variant | s/image | speed-up vs peer |"]
    lines.append("|---|---|---|")
    for name, t, _ in pert:
        peer = "TorchCAM ScoreCAM" if "score" in name.lower() else "pytorch-grad-cam AblationCAM"
        lines.append(f"| {name} | {t:.3f} | {tc_time[peer] / t:.1f}x vs {peer} |")
    lines += [
        "",
        "## Score-CAM fidelity against exact fp32 (2 images, maps at 7x7)",
        "",
        "| variant | mean Spearman rank corr. | max abs diff |",
        "|---|---|---|",
        *fid,
    ]
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
