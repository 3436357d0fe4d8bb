"""Peak RSS per variant, each in its own subprocess (ResNet-50, random weights).

Usage: python benchmarks/bench_memory.py [--batch 8] [--size 224] [--out benchmarks/results/memory_cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys

from _machine import write_lines

VARIANTS = [
    "nograd_forward",
    "engine_gradcam",
    "engine_gradcampp",
    "engine_xgradcam",
    "engine_layercam",
    "engine_smoothgradcampp",
    "engine_gradcam_layer3",
    "torchcam_gradcam",
    "pgc_gradcam",
]


def _child(variant: str, batch: int, size: int) -> None:
    import torch
    import torchvision

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(batch, 3, size, size)
    if variant == "nograd_forward":
        with torch.no_grad():
            model(x)
    elif variant.startswith("engine_"):
        from pycam_fast.engine import Explainer

        method = variant.split("_")[1]
        layer = "layer3" if variant.endswith("layer3") else "layer4"
        kwargs = {"num_samples": 2} if method == "smoothgradcampp" else {}
        Explainer(model, method, layer, **kwargs)(x)
    elif variant == "torchcam_gradcam":
        from torchcam.methods import GradCAM

        with GradCAM(model, "layer4") as cam:
            out = model(x)
            cam(out.argmax(1).tolist(), out)
    elif variant == "pgc_gradcam":
        from pytorch_grad_cam import GradCAM

        with GradCAM(model, [model.layer4]) as cam:
            cam(x, None)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", default="benchmarks/results/memory_cpu.md")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.batch, args.size)
        return
    rows = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch), "--size", str(args.size)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[variant] = json.loads(res.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024**2
        print(variant, f"{rows[variant]:.3f} GB", flush=True)
    base = rows["nograd_forward"]
    import torch

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "?")
    lines = [
        "# Peak memory (RSS), CPU",
        "",
        f"Date {datetime.date.today()}, {model_name}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"2 threads. ResNet-50 (random weights), batch {args.batch}, {args.size}x{args.size}; one subprocess per "
        "variant, peak RSS from `resource.getrusage(RUSAGE_SELF).ru_maxrss` (includes the interpreter, torch and "
        "the model). Target: engine <= 1.1x the no-grad forward.",
        "",
        "| variant | peak RSS (GB) | vs no-grad forward |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {gb:.3f} | {gb / base:.2f}x |" for name, gb in rows.items()]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
