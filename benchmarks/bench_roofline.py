"""How close the masked forwards of Score-CAM already are to this CPU's fp32 compute ceiling.

Exact Score-CAM at ``layer4`` of ResNet-18 is 512 forwards per image; every exact saving (skipped baseline,
constant channels) is a few forwards at most, so its speed is the forward's. This script measures, in one process,
the fp32 GEMM rate (a 2048^3 matmul, the best case for the CPU's FMA units) and the rate of a batch-64 ResNet-18
forward in the forms TorchCAM (eager NCHW) and the engine (BN-folded channels-last, optionally compiled) run it,
as GFLOP/s and as a share of the GEMM rate.

Usage: python benchmarks/bench_roofline.py [--out benchmarks/results/roofline_cpu.md]
"""

from __future__ import annotations

import datetime

import torch
import torchvision
from _machine import cpu_name, fastest, load_average, report_args, write_lines

from pycam_fast.forward.private_copy import FastModel

# Multiply-adds of one ResNet-18 forward at 224x224 (torchvision's documented 1.81 GFLOPS count MACs).
RESNET18_MACS = 1.814e9


def main() -> None:
    args = report_args("benchmarks/results/roofline_cpu.md", batch=64)
    torch.set_num_threads(2)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm = 2 * 2048**3 / fastest(lambda: a @ b, 10) / 1e9
    model = torchvision.models.resnet18().eval()
    x = torch.rand(args.batch, 3, 224, 224)
    flops = 2 * RESNET18_MACS * args.batch
    variants = {
        "eager NCHW (TorchCAM's masked forwards)": (model, x),
        "BN-folded channels-last (engine, channels_last=True)": (FastModel(model, channels_last=True), x),
        "BN-folded channels-last + compile (engine, compile=True)": (
            FastModel(model, channels_last=True, compile=True),
            x,
        ),
    }
    rows = []
    for name, (fn, inp) in variants.items():
        with torch.inference_mode():
            rate = flops / fastest(lambda fn=fn, inp=inp: fn(inp), 3) / 1e9
        rows.append(f"| {name} | {rate:.0f} | {100 * rate / gemm:.0f}% |")
        print(rows[-1], flush=True)
    machine = cpu_name()
    load = load_average()
    lines = [
        "# fp32 compute ceiling of the Score-CAM masked forwards (CPU)",
        "",
        f"Date {datetime.date.today()}, {machine}, 2 threads, torch {torch.__version__}; load average "
        f"{load}. Fastest of repeated calls. Command: `python benchmarks/bench_roofline.py`.",
        "",
        f"fp32 GEMM (2048^3 matmul): **{gemm:.0f} GFLOP/s**. ResNet-18 forward, batch {args.batch}, 224x224 "
        f"({2 * RESNET18_MACS / 1e9:.2f} GFLOP per image):",
        "",
        "| forward | GFLOP/s | share of GEMM rate |",
        "|---|---|---|",
        *rows,
        "",
        "Exact Score-CAM at 2x TorchCAM would need the masked forwards at twice the eager rate above.",
    ]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
