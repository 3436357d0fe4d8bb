"""Chunk sizes from a memory budget, and chunked evaluation that retries smaller chunks on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_CPU_BUDGET",
    "GPU_BUDGET_FRACTION",
    "default_budget",
    "forward_bytes_per_sample",
    "is_oom",
    "run_chunked",
]

#: Default working-memory budget for the masked forwards on the CPU (bytes).
DEFAULT_CPU_BUDGET = 1 << 30
#: Fraction of the free device memory used by default on accelerators.
GPU_BUDGET_FRACTION = 0.5


def default_budget(device: torch.device) -> int:
    """Default budget in bytes: :data:`DEFAULT_CPU_BUDGET` on the CPU, a fraction of the free memory on CUDA."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_FRACTION)
    return DEFAULT_CPU_BUDGET


def forward_bytes_per_sample(model: nn.Module, sample: Tensor, context: Callable[[], Any]) -> int:
    """Upper bound of the memory one sample needs in an inference forward: the sum of every module's output size.

    Args:
        model: the (private) model to probe.
        sample: ``(1, *input_shape)`` input.
        context: returns the context manager the real forwards run in (autocast, no_grad).

    Returns:
        bytes (at least the input's size).

    """
    total = [sample.numel() * sample.element_size()]

    def _add(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            total[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(_add) for m in model.modules()]
    try:
        with context():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA OOM or a RuntimeError saying so)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_chunked(
    fn: Callable[[int, int], None],
    total: int,
    chunk: int,
    progress: Any = None,
) -> int:
    """Call ``fn(start, stop)`` over ``[0, total)`` in chunks, halving the chunk after an out-of-memory error.

    Args:
        fn: processes items ``start <= i < stop`` (must be safe to call again for a range that failed).
        total: number of items.
        chunk: initial chunk size (``>= 1``).
        progress: optional object with ``update(n)`` (a tqdm bar).

    Returns:
        the chunk size that was used at the end.

    Raises:
        RuntimeError: out of memory with a chunk of one item (re-raised as is), or any other error of ``fn``.

    """
    start = 0
    while start < total:
        stop = min(start + chunk, total)
        try:
            fn(start, stop)
        except (RuntimeError, MemoryError) as exc:
            if not (is_oom(exc) or isinstance(exc, MemoryError)) or chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if progress is not None:
            progress.update(stop - start)
        start = stop
    return chunk
