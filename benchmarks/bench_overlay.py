"""Batched ``pycam_fast.utils.overlay`` against TorchCAM's PIL ``overlay_mask`` (per image, incl. to_pil_image).

Usage: python benchmarks/bench_overlay.py [--out benchmarks/results/overlay_cpu.md] [--repeats 9]
Float images 224x224 in [0, 1], 7x7 maps, batches 1, 8 and 64. Two clocks: wall time with torch's default threads,
and CPU time (all threads) with one torch thread, which is steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from pycam_fast.cli.bench import overlay_timings
from pycam_fast.cli.common import versions

BASELINE = "overlay_mask (TorchCAM, PIL)"


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()} ({fields.get('CPU(s)', '?').strip()} logical CPUs)"


def _loads(loads: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in loads)


def _row(batch: int, repeats: int, threads: int, clock_name: str) -> str:
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timings = overlay_timings(batch, repeats=repeats, clock=clock)
    finally:
        torch.set_num_threads(default)
    base, ours = timings[BASELINE], timings["overlay"]
    return f"| {batch} | {clock_name} | {threads} | {1000 * base:.1f} | {1000 * ours:.1f} | {base / ours:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overlay_cpu.md"))
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of overlay (the baseline: half)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for batch in args.batches:
        for threads, clock_name in ((torch.get_num_threads(), "wall"), (1, "wall"), (1, "cpu")):
            rows.append(_row(batch, args.repeats, threads, clock_name))
            print(rows[-1], flush=True)
    vers = versions()
    lines = [
        "# overlay benchmark (cpu)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_cpu_name()}; shared, load average (1, 5, 15 min) {_loads(load_before)} at the start, "
        f"{_loads(os.getloadavg())} at the end",
        f"- torch: {torch.__version__}; pillow {vers['pillow']}, matplotlib {vers['matplotlib']}, "
        f"torchcam {vers['torchcam']}",
        "- images: float (N, 3, 224, 224) in [0, 1], maps (N, 7, 7), alpha 0.5, 'jet'; medians of timed loops",
        "- baseline: torchcam.utils.overlay_mask(to_pil_image(img), to_pil_image(cam, mode='F')) per image",
        "- clock: wall = wall time; cpu = process CPU time (all threads), steadier on a loaded machine",
        "",
        "| batch | clock | torch threads | overlay_mask ms | overlay ms | ratio |",
        "|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
