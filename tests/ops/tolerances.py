"""Shared helpers of the op tests: the ONE tolerance table, the backend x device targets, inputs and the oracle.

Every op family compares a backend's output with the reference (:mod:`pycam_fast.ops.reference`) evaluated in
float64 on the same (already rounded) inputs, so the oracle's own fp16/bf16/fp32 rounding stays out of the
comparison. The kernels accumulate in fp32 (fp64 for fp64), so the error left is a few roundings of the result: the
table below allows about 4 ulps (at 1) of fp16/bf16 and ~100 of fp32, relative to the value or to ``scale`` (the
magnitude of outputs that are not normalised to [0, 1]).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
import torch

from pycam_fast import ops
from pycam_fast.ops import dispatch

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64

#: The one tolerance table (per result dtype): ``atol`` is scaled by the magnitude of the expected values.
TOL: dict[torch.dtype, dict[str, float]] = {
    F32: {"atol": 1e-5, "rtol": 1e-5},
    F64: {"atol": 1e-10, "rtol": 1e-10},
    F16: {"atol": 2e-3, "rtol": 2e-3},
    BF16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}

#: dtypes each backend's kernels take (everything else is routed to the reference, see test_dispatch.py)
KERNEL_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpp": (F32, F64, F16, BF16),
    "cuda": (F32, F64, F16, BF16),
    "triton": (F32, F16, BF16),
}

#: (backend, device) pairs: the compiled extension (``cpp`` on CPU tensors, ``cuda`` on CUDA tensors) and Triton
#: (on CPU through the interpreter, TRITON_INTERPRET=1 set by tests/conftest.py without a GPU).
TARGETS = [
    pytest.param("cpp", "cpu", id="cpp-cpu"),
    pytest.param("triton", "cpu", id="triton-cpu"),
    pytest.param("cuda", "cuda", id="cuda-cuda", marks=pytest.mark.cuda),
    pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.cuda),
]
#: the compiled extension only (ops Triton has no kernel for, e.g. overlay)
COMPILED_TARGETS = [TARGETS[0], TARGETS[2]]

#: ``masked_inputs`` shapes ``(N, C, feature size, Cin, input size, shared input)``: odd upsampling, downsampling,
#: same size, 1x1, 3-D, 1-D
MASKED_INPUT_CASES = [
    (2, 3, (7, 7), 3, (13, 29), False),
    (1, 17, (3, 5), 3, (8, 6), True),
    (3, 4, (2, 3, 4), 2, (5, 7, 9), False),
    (2, 3, (5,), 3, (11,), False),
    (2, 3, (1, 1), 3, (4, 5), True),
    (2, 3, (7, 7), 2, (5, 4), False),
    (2, 3, (4, 4), 3, (4, 4), False),
]


def interpreting() -> bool:
    """Whether Triton runs through its (slow) CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def require(backend: str, device: str, dtype: torch.dtype | None = None) -> None:
    """Skip unless ``backend`` runs kernels on ``device`` tensors (and takes ``dtype``)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if backend == "triton" and device == "cpu" and not interpreting():
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 (set by tests/conftest.py without a GPU)")
    if backend == "triton" and device == "cuda" and interpreting():
        pytest.skip("TRITON_INTERPRET=1: the Triton kernels are interpreted, not compiled for the GPU")
    info = ops.backends()[backend]
    if not info["available"] or device not in info["devices"]:
        pytest.skip(f"backend {backend!r} unavailable on {device}: {info['reason']}")
    if dtype is not None and dtype not in KERNEL_DTYPES[backend]:
        pytest.skip(f"backend {backend!r} has no {dtype} kernels (the reference runs them: test_dispatch.py)")


def slow_target(backend: str, device: str) -> bool:
    """Whether a (backend, device) pair is the Triton interpreter: large shapes take seconds there."""
    return backend == "triton" and device == "cpu"


def randn(*shape: int, seed: int, dtype: torch.dtype = F32, device: str = "cpu") -> torch.Tensor:
    """Seeded standard normal values drawn in float64, rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype).to(device)


def rand(*shape: int, seed: int, dtype: torch.dtype = F32, device: str = "cpu") -> torch.Tensor:
    """Seeded uniform ``[0, 1)`` values drawn in float64, rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=gen, dtype=F64).to(dtype).to(device)


def oracle(fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    """``fn`` (a reference op) on CPU in float64, on the same (rounded) values as the backend saw."""

    def up(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.cpu()
            return x.double() if x.is_floating_point() else x
        return x

    return fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    """``actual`` equals ``expected`` to the table's tolerance for ``dtype`` (NaN where and only where expected).

    Args:
        actual: the backend's result.
        expected: the oracle's result (any dtype, any device).
        dtype: the result dtype whose tolerance applies.
        scale: magnitude of the expected values (``atol`` is multiplied by it).

    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.detach().cpu().double(),
        expected.detach().cpu().double(),
        atol=tol["atol"] * scale,
        rtol=tol["rtol"],
        equal_nan=True,
    )


def magnitude(t: torch.Tensor) -> float:
    """``max(1, max |t|)`` over the finite values: the ``scale`` of unnormalised results."""
    finite = t[torch.isfinite(t)]
    return max(1.0, float(finite.abs().max())) if finite.numel() else 1.0


def _no_fallback(message: str, *_: Any) -> None:
    if "using the torch reference" in message:
        raise AssertionError(f"the kernel did not run: {message}")


def call(op: str, backend: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run public op ``op`` on ``backend`` and fail if the dispatcher hands the inputs to the reference instead."""
    with mock.patch.object(dispatch, "log_once", _no_fallback):
        return getattr(ops, op)(*args, backend=backend, **kwargs)
