"""``cam_step`` on every kernel backend (cpp, cuda, triton) against the float64 reference."""

from __future__ import annotations

import pytest
import torch
from tolerances import BF16, F16, F32, F64, TARGETS, assert_close, call, magnitude, oracle, randn, require, slow_target

from pycam_fast.ops import reference as ref

pytestmark = pytest.mark.parametrize(("backend", "device"), TARGETS)

# (C, feature size, output size): identity, odd non-multiple up/down-sampling, 1x1 (constant), 3-D, 1-D, many channels
CASES = [
    (3, (7, 7), None),
    (17, (7, 7), (13, 29)),
    (1, (3, 5), (9, 4)),
    (3, (1, 1), (5, 6)),
    (5, (2, 3, 4), (5, 7, 9)),
    (3, (5,), (11,)),
    (3, (9, 13), (4, 5)),
    (512, (3, 7), (7, 13)),
]
FLAGS = [{}, {"relu": False}, {"normalize": False}, {"relu": False, "normalize": False}]


def _affordable(backend: str, device: str, size: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """224x224 outputs take seconds on the Triton interpreter: it gets 61x61 (still ~9x upsampling of 7x7)."""
    return (61, 61) if size == (224, 224) and slow_target(backend, device) else size


def _check(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, normalized: bool) -> None:
    assert actual.dtype == dtype and actual.is_contiguous()
    assert_close(actual, expected, dtype, scale=1.0 if normalized else magnitude(expected))


@pytest.mark.parametrize(("c", "spatial", "out"), CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_reference(backend, device, c, spatial, out, dtype, batch) -> None:
    require(backend, device, dtype)
    a = randn(batch, c, *spatial, seed=1, dtype=dtype, device=device)
    w = randn(batch, c, seed=2, dtype=dtype, device=device)
    for flags in FLAGS:
        actual = call("cam_step", backend, w, a, output_size=out, **flags)
        assert actual.device.type == device
        _check(actual, oracle(ref.cam_step, w, a, output_size=out, **flags), dtype, flags.get("normalize", True))


@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize(("c", "spatial", "out"), [CASES[1], CASES[4], CASES[6]])
def test_low_precision(backend, device, dtype, c, spatial, out) -> None:
    require(backend, device, dtype)
    a = randn(2, c, *spatial, seed=5, dtype=dtype, device=device)
    w = randn(2, c, seed=6, dtype=dtype, device=device)
    for flags in (FLAGS[0], FLAGS[3]):
        actual = call("cam_step", backend, w, a, output_size=out, **flags)
        _check(actual, oracle(ref.cam_step, w, a, output_size=out, **flags), dtype, flags.get("normalize", True))


@pytest.mark.parametrize("spatial", [(7, 5), (2, 3, 4), (9,)])
def test_weight_forms(backend, device, spatial) -> None:
    """``(1, C)`` weights broadcast over the batch; ``(N, C, *S)`` weights are element-wise (LayerCAM)."""
    require(backend, device)
    a = randn(3, 17, *spatial, seed=7, device=device)
    out = tuple(2 * s + 1 for s in spatial)
    for w in (randn(1, 17, seed=8, device=device), randn(3, 17, *spatial, seed=9, device=device)):
        for flags in (FLAGS[0], FLAGS[3]):
            actual = call("cam_step", backend, w, a, output_size=out, **flags)
            _check(actual, oracle(ref.cam_step, w, a, output_size=out, **flags), F32, flags.get("normalize", True))


def test_mixed_dtypes_promote(backend, device) -> None:
    pairs = [(F16, F32)] + ([(F16, F64)] if backend != "triton" else [])
    for act_dtype, w_dtype in pairs:
        require(backend, device, w_dtype)
        a = randn(2, 5, 7, 7, seed=10, dtype=act_dtype, device=device)
        w = randn(2, 5, seed=11, dtype=w_dtype, device=device)
        actual = call("cam_step", backend, w, a, output_size=(9, 11))
        _check(actual, oracle(ref.cam_step, w, a, output_size=(9, 11)), w_dtype, True)


def test_noncontiguous_and_channels_last(backend, device) -> None:
    require(backend, device)
    strided = randn(3, 17, 14, 7, seed=12, device=device)[:, :, ::2]  # (3, 17, 7, 7) view
    sliced = randn(3, 34, 5, 3, seed=13, device=device)[:, ::2].transpose(2, 3)  # sliced channels, swapped dims
    cl = randn(3, 17, 7, 7, seed=14, device=device).contiguous(memory_format=torch.channels_last)
    w = randn(17, 3, seed=15, device=device).t()  # non-contiguous (3, 17)
    for a in (strided, sliced, cl):
        for out in (None, (13, 29)):
            actual = call("cam_step", backend, w, a, output_size=out)
            _check(actual, oracle(ref.cam_step, w, a, output_size=out), F32, True)
    w_full = randn(3, 17, 7, 7, seed=16, device=device).transpose(2, 3)  # non-contiguous element-wise weights
    _check(call("cam_step", backend, w_full, cl), oracle(ref.cam_step, w_full, cl), F32, True)


@pytest.mark.parametrize("out", [None, (13, 29), (224, 224)])
@pytest.mark.parametrize("dtype", [F32, F16, F64])
def test_constant_maps_are_exactly_zero(backend, device, out, dtype) -> None:
    """A map constant at feature resolution normalises to exactly 0: no NaN, no amplified resize rounding."""
    require(backend, device, dtype)
    out = _affordable(backend, device, out)
    a = torch.full((2, 5, 7, 7), 0.3, dtype=dtype, device=device)
    for fill in (0.0, 1.0, -1.0):
        w = torch.full((2, 5), fill, dtype=dtype, device=device)
        for relu in (True, False):
            cam = call("cam_step", backend, w, a, output_size=out, relu=relu)
            assert torch.equal(cam, torch.zeros_like(cam)), (fill, relu)


@pytest.mark.parametrize(
    ("spatial", "out"),
    [
        ((7, 7), (224, 224)),  # 14 x 14 extreme candidates of 224 x 224
        ((9, 13), (4, 5)),  # downsampling: every output coordinate is a candidate
        ((7, 7), (7, 3)),  # identity along H, downsampling along W
        ((3, 8), (31, 8)),
        ((4, 6, 5), (2, 9, 3)),
        ((2,), (17,)),
    ],
)
@pytest.mark.parametrize("relu", [True, False])
def test_minmax_spans_unit_range(backend, device, spatial, out, relu) -> None:
    """Min-max over the resized map (the kernels look at extreme candidates only): min 0, max 1 (or an all-0 map)."""
    dtype = F32 if backend == "triton" else F64
    require(backend, device, dtype)
    out = _affordable(backend, device, out)
    a = randn(3, 5, *spatial, seed=17, dtype=dtype, device=device)
    w = randn(3, 5, seed=18, dtype=dtype, device=device)
    actual = call("cam_step", backend, w, a, output_size=out, relu=relu)
    _check(actual, oracle(ref.cam_step, w, a, output_size=out, relu=relu), dtype, True)
    flat = actual.flatten(1).double().cpu()
    assert torch.equal(flat.amin(1), torch.zeros(3, dtype=F64))
    top = flat.amax(1)
    assert bool((((top - 1).abs() < 1e-6) | (top == 0)).all()), top


def test_nan_activations_are_skipped(backend, device) -> None:
    require(backend, device)
    a = randn(2, 17, 7, 7, seed=19, device=device)
    a[0, 3, 2, 2] = float("nan")
    a[1, :, 0, 0] = float("nan")  # every product NaN at one location: nansum gives 0 there
    w = randn(2, 17, seed=20, device=device)
    for flags in (FLAGS[0], FLAGS[3]):
        actual = call("cam_step", backend, w, a, output_size=(13, 29), **flags)
        assert not torch.isnan(actual).any()
        _check(actual, oracle(ref.cam_step, w, a, output_size=(13, 29), **flags), F32, flags.get("normalize", True))


def test_large_upsample(backend, device) -> None:
    """A layer4-like 7x7 map (and a 3x5 one) to 224x224; on the Triton interpreter a smaller 96x80."""
    require(backend, device)
    size = (96, 80) if slow_target(backend, device) else (224, 224)
    for spatial in ((7, 7), (3, 5)):
        a, w = randn(2, 33, *spatial, seed=21, device=device), randn(2, 33, seed=22, device=device)
        _check(call("cam_step", backend, w, a, output_size=size), oracle(ref.cam_step, w, a, output_size=size), F32, 1)


def test_realistic_fp16_channels_last(backend, device) -> None:
    """ResNet-50 layer4 sizes: 2048 channels, fp16, channels-last, to 224x224 (GPU targets only: seconds on CPU)."""
    if device == "cpu":
        pytest.skip("GPU-sized case")
    require(backend, device, F16)
    a = randn(2, 2048, 7, 7, seed=23, dtype=F16, device=device).contiguous(memory_format=torch.channels_last)
    w = randn(2, 2048, seed=24, dtype=F16, device=device)
    _check(
        call("cam_step", backend, w, a, output_size=(224, 224)),
        oracle(ref.cam_step, w, a, output_size=(224, 224)),
        F16,
        True,
    )


@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("out", [None, (7, 9)])
def test_triton_channel_split(backend, device, split, out) -> None:
    """The Triton launcher's channel split (partial sums reduced before the resize) gives the same maps."""
    if backend != "triton":
        pytest.skip("Triton launcher option")
    require(backend, device)
    from pycam_fast.kernels.cam_step import cam_step as launcher

    a, w = randn(2, 17, 3, 5, seed=25, device=device), randn(2, 17, seed=26, device=device)
    for flags in (FLAGS[0], FLAGS[3]):
        relu, normalize = flags.get("relu", True), flags.get("normalize", True)
        actual = launcher(w, a, relu, out, normalize, ref.DEFAULT_EPS, split=split)  # schema order, then split
        _check(actual, oracle(ref.cam_step, w, a, output_size=out, **flags), F32, flags.get("normalize", True))
