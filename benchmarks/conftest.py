"""Shared set-up of the pytest-benchmark suite (``pytest benchmarks/ --benchmark-only``).

Sizes are small by default, so the whole suite runs in about a minute on 2 idle CPU cores (50 s measured; about two
when the cores are shared); scale them with environment variables to reproduce the README's numbers:

- ``PYCAM_BENCH_SIZE`` (default 128): input side of the ResNet-18 cases (224 for ImageNet-sized inputs).
- ``PYCAM_BENCH_BATCH`` (default 8): images per batch of the gradient cases (overlays: 4x as many).
- ``PYCAM_BENCH_SCORE_SIZE`` (default 96): input side of the Score-CAM case (one image, 512 masked forwards).
- ``PYCAM_BENCH_ROUNDS`` (default 3): timed rounds per benchmark, after one warm-up round.
- ``PYCAM_BENCH_DEVICE`` (default ``cpu``): ``cuda`` runs the model cases on the GPU.
- ``PYCAM_BENCH_THREADS``: torch CPU threads (default: torch's choice).

Every benchmark sets ``benchmark.group`` to its workload and ``extra_info["impl"]`` / ``extra_info["role"]``
(``"peer"`` or ``"pycam_fast"``), which ``benchmarks/report.py`` turns into the ratio table and bar chart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _suite import BATCH, DEVICE, ROUNDS, SCORE_SIZE, SIZE, Workload


def pytest_configure(config: pytest.Config) -> None:
    """Keep TorchCAM's per-construction layer log out of the timings' output."""
    del config
    logging.getLogger("torchcam").setLevel(logging.ERROR)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Record the suite's sizes and the torch build next to pytest-benchmark's machine info in the saved JSON."""
    del config
    machine_info["pycam_bench"] = {
        "size": SIZE,
        "batch": BATCH,
        "score_size": SCORE_SIZE,
        "rounds": ROUNDS,
        "device": str(DEVICE),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


@pytest.fixture(scope="session")
def resnet18() -> Callable[[int], Workload]:
    """``make(batch, size=SIZE)``: the shared ResNet-18 and a seeded ``(batch, 3, size, size)`` input."""
    torchvision = pytest.importorskip("torchvision")
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("PYCAM_BENCH_DEVICE=cuda but no GPU is visible")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(DEVICE)

    def make(batch: int, size: int = SIZE) -> Workload:
        gen = torch.Generator().manual_seed(batch)
        return Workload(model, torch.rand(batch, 3, size, size, generator=gen).to(DEVICE))

    return make


@pytest.fixture
def bench(benchmark: Any) -> Callable[..., None]:
    """``bench(group, impl, role, fn, size=SIZE)``: time ``fn`` (a warm-up round, then ``ROUNDS`` rounds)."""

    def run(group: str, impl: str, role: str, fn: Callable[[], object], size: int = SIZE) -> None:
        benchmark.group = group
        benchmark.extra_info.update({"impl": impl, "role": role, "size": size, "device": str(DEVICE)})

        def call() -> None:
            fn()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()

        benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    return run
