"""Sizes of the pytest-benchmark suite (environment variables, see ``benchmarks/conftest.py``) and its workload."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

SIZE = int(os.environ.get("PYCAM_BENCH_SIZE", "128"))
BATCH = int(os.environ.get("PYCAM_BENCH_BATCH", "8"))
SCORE_SIZE = int(os.environ.get("PYCAM_BENCH_SCORE_SIZE", "96"))
ROUNDS = int(os.environ.get("PYCAM_BENCH_ROUNDS", "3"))
DEVICE = torch.device(os.environ.get("PYCAM_BENCH_DEVICE", "cpu"))
if "PYCAM_BENCH_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["PYCAM_BENCH_THREADS"]))


@dataclass
class Workload:
    """A random-weights ResNet-18 (seed 0, eval mode) and a ``(N, 3, SIZE, SIZE)`` input batch on :data:`DEVICE`."""

    model: torch.nn.Module
    inputs: torch.Tensor
