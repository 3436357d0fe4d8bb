"""Machine facts every benchmark table records, and the fastest-of-N timing rule (shared by the benchmark scripts,
which run from this folder)."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time
from collections.abc import Callable

import torch


def cpu_name() -> str:
    """The CPU model from ``lscpu`` (``"?"`` when it is unavailable)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"0.42 0.51 0.60"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_args(out: str, **int_options: int) -> argparse.Namespace:
    """A report script's command line: ``--out`` (default ``out``) and an int ``--NAME`` per keyword (its default)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=out)
    for name, default in int_options.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def write_lines(path: str | os.PathLike[str], lines: list[str]) -> None:
    """Write a report's ``lines`` (Markdown) to ``path``, one per line."""
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def random_resnet18(threads: int, num_classes: int = 1000, random_batch_norm: bool = False) -> torch.nn.Module:
    """Set ``threads`` torch threads and seed 0, then build a random-weights ResNet-18 in eval mode.

    Args:
        threads: torch threads.
        num_classes: the classifier's classes.
        random_batch_norm: also draw the batch-norm statistics and biases (running mean in [-1, 1), variance in
            [0.5, 2), bias in [-0.5, 0.5)), so that eval-mode layers are not near-identities.

    Returns:
        the model (speed does not depend on the weights).

    """
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes).eval()
    if random_batch_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.bias.data.uniform_(-0.5, 0.5)
    return model


def write_report(path: str | os.PathLike[str], title: str, setup: str, table: list[str]) -> None:
    """Write a Markdown report to ``path`` and print where it went.

    The report is the heading ``# title``, the paragraph ``Date <today>, <CPU>, <setup>`` and the ``table`` lines.
    """
    write_lines(path, [f"# {title}", "", f"Date {datetime.date.today()}, {cpu_name()}, {setup}", "", *table])
    print(f"wrote {path}")


def ratio_table(case: str, rows: list[tuple], extra: tuple[str, ...] = (), peer: str = "grad-cam 1.5.7") -> list[str]:
    """A Markdown ratio table: ``case | peer ms | pycam_fast ms | speed-up | extra...``.

    ``rows`` are ``(name, peer seconds, pycam_fast seconds, *extra cells already formatted)``.
    """
    head = f"| {case} | {peer} ms | pycam_fast ms | speed-up |" + "".join(f" {e} |" for e in extra)
    rule = "|---|---:|---:|---:|" + "---|" * len(extra)
    body = [
        f"| {name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |" + "".join(f" {cell} |" for cell in cells)
        for name, a, b, *cells in rows
    ]
    return [head, rule, *body]


def fastest(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call (the least disturbed on a shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
