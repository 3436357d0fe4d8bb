"""Engine throughput against TorchCAM 0.5.0 and pytorch-grad-cam 1.5.7, side by side in one process.

Usage: python benchmarks/bench_engine.py [--parts grad pert fid] [--out benchmarks/results/engine_cpu.md]
ResNet-18 (random weights), 224x224, 2 threads. Gradient methods: batch 16; the slow perturbation peers run on
one image (see the table). ``fid`` (Score-CAM ``top_k`` fidelity) writes its own file (``--fid-out``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import time
from collections.abc import Callable

import torch
import torchvision
from _machine import cpu_name, load_average, write_lines

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

    # fp32 throughout: bf16 autocast is ~2x slower than fp32 on CPUs without AVX512-BF16/AMX (this one).
    fp32 = Explainer(model, "scorecam", "layer4", batch_size=64)
    cl = Explainer(model, "scorecam", "layer4", batch_size=64, channels_last=True)
    compiled = Explainer(model, "scorecam", "layer4", batch_size=64, channels_last=True, compile=True)
    topk = Explainer(model, "scorecam", "layer4", batch_size=64, channels_last=True, top_k=64)
    abl = Explainer(model, "ablationcam", "layer4")
    # The peer and the drop-in class alternate (2 cold calls each, the faster kept) so drift on the shared machine
    # hits both alike.
    tc_s, di_s = [], []
    for _ in range(2):
        tc_s.append(_timed(torchcam_score, 0))
        di_s.append(_timed(drop_in_score, 0))
    compile_s = _timed(lambda: compiled(x1, cls), 0)  # first call: includes the compile
    return [
        ("TorchCAM ScoreCAM", min(tc_s), "1 img"),
        ("pycam_fast ScoreCAM (drop-in)", min(di_s), "1 img"),
        ("engine scorecam fp32 (folded bn)", _timed(lambda: fp32(x1, cls), 1), "1 img"),
        ("engine scorecam fp32 + channels_last", _timed(lambda: cl(x1, cls), 1), "1 img"),
        ("engine scorecam fp32 + cl + compile", _timed(lambda: compiled(x1, cls), 2), "1 img"),
        ("(first call of the above, incl. compile)", compile_s, "1 img"),
        ("engine scorecam fp32 + cl, top_k=64 (approx.)", _timed(lambda: topk(x1, cls), 1), "1 img"),
        ("pytorch-grad-cam AblationCAM", _timed(pgc_ablation, 0), "1 img"),
        ("pycam_fast AblationCAM (drop-in, tail)", _timed(drop_in_ablation, 3), "1 img"),
        ("engine ablationcam (tail)", _timed(lambda: abl(x1, cls), 3), "1 img"),
    ]


def _fidelity(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Rows ``| variant | mean Spearman | min Spearman | max abs diff |`` of approximations vs exact fp32 maps."""
    from pycam_fast.engine import Explainer

    exact = Explainer(model, "scorecam", "layer4", output_size=None, batch_size=64)(x).flatten(1)
    out = []
    for k in (256, 128, 64, 32):
        approx = Explainer(model, "scorecam", "layer4", output_size=None, batch_size=64, channels_last=True, top_k=k)
        b = approx(x).flatten(1)
        ra, rb = exact.argsort(1).argsort(1).float(), b.argsort(1).argsort(1).float()
        rho = torch.stack([torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(ra, rb, strict=True)])
        row = f"| top_k={k} of 512 | {rho.mean():.4f} | {rho.min():.4f} | {(exact - b).abs().max():.4f} |"
        print(row, flush=True)
        out.append(row)
    return out


def _write_fidelity(path: str, rows: list[str], n: int) -> None:
    lines = [
        "# Score-CAM `top_k` fidelity (Faster Score-CAM approximation)",
        "",
        f"Date {datetime.date.today()}, {cpu_name()}, torch {torch.__version__}. ResNet-18 random weights, layer4 "
        f"(512 channels), {n} random 224x224 images, maps at feature resolution (7x7), normalised to [0, 1]; "
        "exact = fp32 Score-CAM over all 512 channels. Command: `python benchmarks/bench_engine.py --parts fid`.",
        "",
        "| variant | mean Spearman rank corr. | min Spearman | max abs diff |",
        "|---|---|---|---|",
        *rows,
    ]
    write_lines(path, lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/engine_cpu.md")
    parser.add_argument("--fid-out", default="benchmarks/results/scorecam_fidelity_cpu.md")
    parser.add_argument("--parts", nargs="+", default=["grad", "pert", "fid"], choices=["grad", "pert", "fid"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    if "fid" in args.parts:
        _write_fidelity(args.fid_out, _fidelity(model, x[:4]), 4)
    if "grad" not in args.parts or "pert" not in args.parts:
        return
    grad = _gradient_rows(model, x, args.repeats)
    print(grad, flush=True)
    pert = _perturbation_rows(model, x[:1])
    print(pert, flush=True)
    import torchcam

    load = load_average()
    tc_time = dict((r[0], r[1]) for r in grad + pert)
    lines = [
        "# Engine throughput, CPU",
        "",
        f"Date {datetime.date.today()}, {cpu_name()}, 2 threads, torch {torch.__version__}, torchcam "
        f"{torchcam.__version__}, pytorch-grad-cam 1.5.7. ResNet-18 random weights, 224x224. Gradient methods: batch "
        f"{args.batch}, mean of {args.repeats} calls after a warm-up (pytorch-grad-cam: 1 call). Perturbation methods: "
        "1 image, Score-CAM chunks of 64 (TorchCAM: 32); TorchCAM and the drop-in ScoreCAM: the faster of 2 "
        "alternating cold calls; engine: mean after a warm-up. Load average at the end: "
        f"{load}. Command: `python benchmarks/bench_engine.py --parts grad pert`.",
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
        peer = "pytorch-grad-cam AblationCAM" if "ablation" in name.lower() else "TorchCAM ScoreCAM"
        lines.append(f"| {name} | {t:.3f} | {tc_time[peer] / t:.2f}x vs {peer} |")
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
