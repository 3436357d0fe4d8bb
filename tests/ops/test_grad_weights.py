"""The gradient-weight ops (Grad-CAM, XGrad-CAM, Grad-CAM++, TorchCAM's Grad-CAM++) on every kernel backend."""

from __future__ import annotations

import pytest
import torch
from tolerances import (
    BF16,
    F16,
    F32,
    F64,
    KERNEL_DTYPES,
    TARGETS,
    assert_close,
    call,
    magnitude,
    oracle,
    rand,
    randn,
    require,
)

from pycam_fast.ops import reference as ref

pytestmark = pytest.mark.parametrize(("backend", "device"), TARGETS)

OPS = ["gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"]
_TWO_INPUTS = {"xgradcam_weights", "gradcampp_weights"}
# (N, C, *S): 1x1, odd 2-D, 3-D, 1-D, batch 1 with many channels
CASES = [(2, 1, 1, 1), (2, 3, 3, 5), (1, 17, 7, 7), (3, 4, 7, 13), (2, 5, 2, 3, 4), (3, 4, 5), (1, 512, 3, 5)]


def _inputs(shape, dtype=F32, device="cpu", seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    grads = randn(*shape, seed=seed, dtype=dtype, device=device)
    grads.view(-1)[::4] = 0  # Grad-CAM++'s g^2 == 0 branch (alpha = 0)
    acts = rand(*shape, seed=seed + 1, dtype=dtype, device=device) * 3  # post-ReLU activations: sum_S(A) > 0
    return grads, acts


def _args(op: str, grads: torch.Tensor, acts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (grads, acts) if op in _TWO_INPUTS else (grads,)


def _check(op: str, backend: str, args: tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    actual = call(op, backend, *args)
    expected = oracle(getattr(ref, op), *args)
    assert actual.dtype == dtype and actual.shape == args[0].shape[:2] and actual.device == args[0].device
    assert_close(actual, expected, dtype, scale=magnitude(expected))
    return actual


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_matches_reference(backend, device, op, shape, dtype) -> None:
    require(backend, device, dtype)
    _check(op, backend, _args(op, *_inputs(shape, dtype, device)), dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [F16, BF16])
def test_low_precision(backend, device, op, dtype) -> None:
    require(backend, device, dtype)
    for shape in ((2, 17, 3, 5), (1, 3, 2, 3, 4)):
        _check(op, backend, _args(op, *_inputs(shape, dtype, device, seed=2)), dtype)


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_and_channels_last(backend, device, op) -> None:
    require(backend, device)
    grads = randn(2, 6, 3, 5, seed=3, device=device).contiguous(memory_format=torch.channels_last)
    acts = rand(2, 12, 5, 3, seed=4, device=device)[:, ::2].transpose(2, 3)
    _check(op, backend, _args(op, grads, acts), F32)
    _check(op, backend, _args(op, acts, grads), F32)  # the other way round


def test_gradcampp_branches(backend, device) -> None:
    """Grad-CAM++: alpha is 0 where g == 0, negative g contribute nothing, and a zero-activation channel is finite."""
    require(backend, device)
    grads = randn(2, 4, 3, 5, seed=5, device=device)
    grads[0, 0] = 0  # all-zero gradients: weight 0
    grads[0, 1] = -grads[0, 1].abs()  # only negative gradients: relu(g) = 0, weight 0
    acts = rand(2, 4, 3, 5, seed=6, device=device)
    acts[1, 2] = 0  # sum_S(A) = 0: alpha = 1/2 where g != 0
    out = _check("gradcampp_weights", backend, (grads, acts), F32)
    assert torch.equal(out[0, :2].cpu(), torch.zeros(2)) and torch.isfinite(out).all()
    expected_half = 0.5 * grads[1, 2].relu().sum()
    assert_close(out[1, 2], expected_half, F32)


def test_nan_activations_propagate(backend, device) -> None:
    """A NaN activation makes its channel's XGrad-CAM / Grad-CAM++ weight NaN, and only that channel's."""
    require(backend, device)
    grads, acts = _inputs((1, 3, 3, 5), device=device, seed=7)
    grads[0, 1, 1, 1] = 1.0  # a non-zero gradient in the NaN channel
    acts[0, 1, 0, 0] = float("nan")
    for op in ("xgradcam_weights", "gradcampp_weights"):
        out = _check(op, backend, (grads, acts), F32)
        assert out[0, 1].isnan() and not out[0, [0, 2]].isnan().any(), op


def test_large(backend, device) -> None:
    """GPU-sized reductions (4 x 512 x 56 x 56, every kernel dtype); the CPU targets take 2 x 64 x 28 x 28 in fp32."""
    require(backend, device)
    shape = (2, 64, 28, 28) if device == "cpu" else (4, 512, 56, 56)
    for dtype in (F32,) if device == "cpu" else KERNEL_DTYPES[backend]:
        grads, acts = _inputs(shape, dtype=dtype, device=device, seed=8)
        for op in OPS:
            _check(op, backend, _args(op, grads, acts), dtype)
