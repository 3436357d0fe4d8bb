"""Benchmark of the compiled ops against the torch reference chain and ``torch.compile`` of the reference.

Usage::

    python benchmarks/bench_ops.py                    # CPU, writes benchmarks/results/ops_cpu.md
    python benchmarks/bench_ops.py --device cuda      # CUDA, adds GB/s vs a device-to-device copy (ops_cuda.md)
    python benchmarks/bench_ops.py --no-compile --sizes 1x512x7x7 64x2048x7x7 --ops cam_step
    python benchmarks/bench_ops.py --device cuda --no-compile --cuda-kernels v1 v2 --json results/ops_v1_v2.json

A script, not a test: nothing here asserts on timings. Each timing is the median of ``--repeat`` runs after
warm-up (CUDA: synchronised). "ratio" columns are reference time / kernel time (> 1: the kernel is faster).
``--cuda-kernels v1 v2`` times each op under every listed ``PYCAM_FAST_CUDA_KERNELS`` value in the same process
(side by side, one copy-bandwidth measurement); ``--json`` also writes the rows as JSON (numbers, not strings).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from _machine import cpu_name  # noqa: E402

from pycam_fast import ops  # noqa: E402
from pycam_fast.ops import compiled  # noqa: E402
from pycam_fast.ops import reference as ref  # noqa: E402

OUT_SIZE = (224, 224)
DEFAULT_SIZES = ["1x512x7x7", "8x512x7x7", "16x2048x7x7", "64x2048x7x7"]
OPS = [
    "cam_step",
    "gradcampp_weights",
    "gradcam_weights",
    "xgradcam_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
]
# (sample, channel) pairs per masked_inputs call: 8 per sample (8 .. 512 pairs over the default sizes, i.e. up to a
# 308 MB fp32 chunk at 224x224, the size of a Score-CAM chunk on a GPU).
MASK_PAIRS_PER_SAMPLE = 8
#: environment variable that selects the CUDA kernel generation (read by the extension at every call)
KERNELS_ENV = "PYCAM_FAST_CUDA_KERNELS"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: str, repeat: int, min_time: float = 0.05) -> float:
    """Median seconds per call (auto-scales inner loops so each sample lasts >= min_time)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _case(op: str, n: int, c: int, h: int, w: int, device: str):
    """(kernel fn, reference fn, args, bytes moved by an ideal kernel)."""
    backend = "cuda" if device == "cuda" else "cpp"
    g = torch.Generator(device="cpu").manual_seed(0)
    acts = torch.randn(n, c, h, w, generator=g).relu_().to(device)
    grads = torch.randn(n, c, h, w, generator=g).to(device)
    el = 4
    if op == "cam_step":
        weights = torch.randn(n, c, generator=g).to(device)
        kw = {"output_size": OUT_SIZE}
        moved = (acts.numel() + weights.numel() + n * OUT_SIZE[0] * OUT_SIZE[1]) * el
        return (
            (lambda: ops.cam_step(weights, acts, **kw, backend=backend)),
            (lambda fn=ref.cam_step: fn(weights, acts, **kw)),
            ref.cam_step,
            (weights, acts),
            kw,
            moved,
        )
    if op in ("xgradcam_weights", "gradcampp_weights"):
        kern, fn = getattr(ops, op), getattr(ref, op)
        moved = (2 * grads.numel() + n * c) * el
        return (lambda: kern(grads, acts, backend=backend)), (lambda: fn(grads, acts)), fn, (grads, acts), {}, moved
    if op in ("gradcam_weights", "gradcampp_weights_torchcam"):
        kern, fn = getattr(ops, op), getattr(ref, op)
        moved = (grads.numel() + n * c) * el
        return (lambda: kern(grads, backend=backend)), (lambda: fn(grads)), fn, (grads,), {}, moved
    if op == "masked_inputs":
        inputs = torch.randn(n, 3, *OUT_SIZE, generator=g).to(device)
        stop = min(MASK_PAIRS_PER_SAMPLE * n, n * c)
        kw = {"start": 0, "stop": stop}
        moved = (stop * (h * w + 3 * OUT_SIZE[0] * OUT_SIZE[1]) + 3 * OUT_SIZE[0] * OUT_SIZE[1]) * el
        return (
            (lambda: ops.masked_inputs(acts, inputs, 0, stop, backend=backend)),
            (lambda: ref.masked_inputs(acts, inputs, 0, stop)),
            ref.masked_inputs,
            (acts, inputs),
            kw,
            moved,
        )
    raise ValueError(op)


def _copy_bandwidth(device: str) -> float:
    """Measured device-to-device copy bandwidth in GB/s (read + write of 512 MiB)."""
    src = torch.empty(128 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    sec = _time(lambda: dst.copy_(src), device, repeat=10)
    return 2 * src.numel() * 4 / sec / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="NxCxHxW activation sizes")
    parser.add_argument("--ops", nargs="+", default=OPS, choices=OPS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) column")
    parser.add_argument(
        "--compile-ops",
        nargs="+",
        default=OPS,
        choices=OPS,
        help="ops that get the torch.compile column (compiling is minutes per op on a small CPU)",
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: results/ops_<device>.md)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows (numbers) to this JSON file")
    parser.add_argument(
        "--cuda-kernels",
        nargs="+",
        default=None,
        choices=["v1", "v2"],
        help=f"time the kernel under each {KERNELS_ENV} value, side by side (default: the environment as is)",
    )
    args = parser.parse_args()
    if compiled.extension_error() is not None:
        sys.exit(f"pycam_fast._C is not available: {compiled.extension_error()}")
    device = args.device
    copy_bw = _copy_bandwidth(device) if device == "cuda" else None

    variants: list[str | None] = list(args.cuda_kernels) if args.cuda_kernels else [None]
    header = ["op", "size (N,C,H,W)", *(["kernels"] if args.cuda_kernels else []), "kernel ms", "torch ms"]
    header += ["ratio torch/kernel"]
    if not args.no_compile:
        header += ["compile ms", "ratio compile/kernel"]
    if copy_bw is not None:
        header += ["kernel GB/s", "% of copy"]
    rows = []
    records: list[dict[str, object]] = []
    torch._dynamo.config.cache_size_limit = 64
    env_before = os.environ.get(KERNELS_ENV)
    for op in args.ops:
        for size in args.sizes:
            n, c, h, w = (int(v) for v in size.lower().split("x"))
            kern, ref_fn, raw_ref, ref_args, ref_kw, moved = _case(op, n, c, h, w, device)
            with torch.no_grad():
                t_r = _time(ref_fn, device, args.repeat)
                t_c = None
                if not args.no_compile and op in args.compile_ops:
                    comp = torch.compile(raw_ref, dynamic=False)
                    t_c = _time(lambda comp=comp, ra=ref_args, rk=ref_kw: comp(*ra, **rk), device, args.repeat)
                for variant in variants:
                    if variant is not None:
                        os.environ[KERNELS_ENV] = variant
                    t_k = _time(kern, device, args.repeat)
                    row = [op, f"{n}x{c}x{h}x{w}", *([variant] if variant else []), f"{t_k * 1e3:.3f}"]
                    row += [f"{t_r * 1e3:.3f}", f"{t_r / t_k:.2f}x"]
                    if not args.no_compile:
                        row += ["-", "-"] if t_c is None else [f"{t_c * 1e3:.3f}", f"{t_c / t_k:.2f}x"]
                    gbs = moved / t_k / 1e9
                    if copy_bw is not None:
                        row += [f"{gbs:.0f}", f"{100 * gbs / copy_bw:.0f}%"]
                    rows.append(row)
                    records.append(
                        {
                            "op": op,
                            "size": f"{n}x{c}x{h}x{w}",
                            "kernels": variant or os.environ.get(KERNELS_ENV, "v1"),
                            "kernel_ms": t_k * 1e3,
                            "torch_ms": t_r * 1e3,
                            "compile_ms": None if t_c is None else t_c * 1e3,
                            "bytes": moved,
                            "gbs": gbs,
                            "pct_copy": None if copy_bw is None else 100 * gbs / copy_bw,
                        }
                    )
                    print(" | ".join(row), flush=True)
    if env_before is None:
        os.environ.pop(KERNELS_ENV, None)
    else:
        os.environ[KERNELS_ENV] = env_before

    if device == "cuda":
        machine = torch.cuda.get_device_name()
    else:
        machine = f"{cpu_name()} ({os.cpu_count()} logical CPUs)"
    lines = [
        f"# pycam_fast op benchmark ({device})",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine}",
        f"- torch: {torch.__version__}, threads: {torch.get_num_threads()}",
        f"- extension: {compiled.build_info()}",
        f"- cam_step / masked_inputs resize to {OUT_SIZE[0]}x{OUT_SIZE[1]}; masked_inputs: "
        f"{MASK_PAIRS_PER_SAMPLE} x N pairs, 3-channel inputs; medians of timed loops; ratio > 1 means the kernel is "
        "faster",
    ]
    if copy_bw is not None:
        lines.append(f"- device-to-device copy: {copy_bw:.0f} GB/s (GB/s of a kernel = ideal bytes moved / time)")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    out = args.out or ROOT / "results" / f"ops_{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    if args.json is not None:
        meta = {
            "device": device,
            "machine": machine,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "extension": compiled.build_info(),
            "copy_gbs": copy_bw,
            "out_size": list(OUT_SIZE),
            "mask_pairs_per_sample": MASK_PAIRS_PER_SAMPLE,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": records}, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
