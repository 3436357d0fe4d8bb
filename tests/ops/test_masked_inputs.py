"""``masked_inputs`` (Score-CAM family) on every kernel backend against the float64 reference."""

from __future__ import annotations

import pytest
import tolerances
import torch
from tolerances import BF16, F16, F32, F64, TARGETS, assert_close, call, magnitude, oracle, randn, require, slow_target

from pycam_fast.ops import reference as ref

pytestmark = pytest.mark.parametrize(("backend", "device"), TARGETS)


def _memory_format(ndim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def _check(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, channels_last: bool = False) -> None:
    assert actual.dtype == dtype
    fmt = _memory_format(actual.ndim) if channels_last else torch.contiguous_format
    assert actual.is_contiguous(memory_format=fmt or torch.contiguous_format)
    assert_close(actual, expected, dtype, scale=magnitude(expected))


@pytest.mark.parametrize(("n", "c", "feat", "cin", "size", "shared"), tolerances.MASKED_INPUT_CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_matches_reference(backend, device, n, c, feat, cin, size, shared, dtype) -> None:
    require(backend, device, dtype)
    a = randn(n, c, *feat, seed=30, dtype=dtype, device=device)
    x = randn(1 if shared else n, cin, *size, seed=31, dtype=dtype, device=device)
    start, stop = 1, n * c - 1
    noise = randn(stop - start, *size, seed=32, dtype=dtype, device=device) * 0.1
    for kwargs in ({}, {"noise": noise}, {"scale": 0.25}, {"noise": noise, "scale": 3.0, "channels_last": True}):
        actual = call("masked_inputs", backend, a, x, start, stop, **kwargs)
        expected = oracle(ref.masked_inputs, a, x, start, stop, **kwargs)
        _check(actual, expected, dtype, kwargs.get("channels_last", False))
        assert actual.stride() == ref.masked_inputs(a, x, start, stop, **kwargs).stride()


@pytest.mark.parametrize("out_dtype", [F16, BF16, F32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_out_dtype(backend, device, out_dtype, channels_last) -> None:
    require(backend, device, out_dtype)
    a, x = randn(2, 5, 7, 7, seed=35, device=device), randn(2, 3, 13, 29, seed=36, device=device)
    noise = randn(7, 13, 29, seed=37, device=device) * 0.1
    actual = call("masked_inputs", backend, a, x, 2, 9, noise=noise, out_dtype=out_dtype, channels_last=channels_last)
    _check(actual, oracle(ref.masked_inputs, a, x, 2, 9, noise=noise), out_dtype, channels_last)


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_low_precision_inputs(backend, device, dtype) -> None:
    require(backend, device, dtype)
    a, x = (
        randn(2, 5, 7, 7, seed=38, dtype=dtype, device=device),
        randn(1, 3, 13, 9, seed=39, dtype=dtype, device=device),
    )
    noise = randn(10, 13, 9, seed=40, dtype=dtype, device=device) * 0.1
    for kwargs in ({}, {"noise": noise, "scale": 0.5}, {"out_dtype": F32}):
        actual = call("masked_inputs", backend, a, x, 0, 10, **kwargs)
        _check(actual, oracle(ref.masked_inputs, a, x, 0, 10, **kwargs), kwargs.get("out_dtype", dtype))


def test_noncontiguous_and_constant_channels(backend, device) -> None:
    require(backend, device)
    a = randn(2, 5, 14, 7, seed=41, device=device)[:, :, ::2]
    a[0, 1] = 2.0  # constant channel: mask exactly 0 (never NaN)
    x = randn(2, 3, 13, 29, seed=42, device=device).contiguous(memory_format=torch.channels_last)
    noise = randn(29, 13, 10, seed=43, device=device).transpose(0, 2)  # (10, 13, 29), non-contiguous
    actual = call("masked_inputs", backend, a, x, 0, 10)
    assert not torch.isnan(actual).any() and torch.equal(actual[1], torch.zeros_like(actual[1]))
    _check(actual, oracle(ref.masked_inputs, a, x, 0, 10), F32)
    _check(call("masked_inputs", backend, a, x, 0, 10, noise=noise, scale=0.3),
           oracle(ref.masked_inputs, a, x, 0, 10, noise=noise, scale=0.3), F32)  # fmt: skip


def test_nan_channel_propagates(backend, device, request) -> None:
    """A NaN activation makes its (sample, channel) mask NaN everywhere (min/max propagate NaN, as in torch)."""
    require(backend, device)
    if backend == "cpp":
        request.applymarker(pytest.mark.xfail(strict=True, reason="the cpp kernel's per-channel min/max skip NaN"))
    a = randn(1, 3, 3, 5, seed=44, device=device)
    a[0, 2, 1, 1] = float("nan")
    x = randn(1, 3, 7, 9, seed=45, device=device)
    actual = call("masked_inputs", backend, a, x, 0, 3)
    assert not actual[:2].isnan().any() and actual[2].isnan().all()
    _check(actual, oracle(ref.masked_inputs, a, x, 0, 3), F32)


def test_large_upsample(backend, device) -> None:
    """Masks upsampled 3x5 -> 224x224 (96x80 on the Triton interpreter)."""
    require(backend, device)
    size = (96, 80) if slow_target(backend, device) else (224, 224)
    a, x = randn(1, 4, 3, 5, seed=46, device=device), randn(1, 3, *size, seed=47, device=device)
    _check(call("masked_inputs", backend, a, x, 0, 4), oracle(ref.masked_inputs, a, x, 0, 4), F32)


def test_realistic_fp16(backend, device) -> None:
    """512 channels of a 7x7 map to 224x224 fp16 masks, a middle chunk with noise (GPU targets only)."""
    if device == "cpu":
        pytest.skip("GPU-sized case")
    require(backend, device, F16)
    a, x = randn(1, 512, 7, 7, seed=48, device=device), randn(1, 3, 224, 224, seed=49, device=device)
    noise = randn(64, 224, 224, seed=50, device=device) * 0.1
    actual = call("masked_inputs", backend, a, x, 100, 164, noise=noise, out_dtype=F16)
    _check(actual, oracle(ref.masked_inputs, a, x, 100, 164, noise=noise), F16)
