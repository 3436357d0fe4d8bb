"""The compiled CPU kernels (``pycam_fast._C``, backend ``cpp``) against the pure-torch reference."""

from __future__ import annotations

import pytest
import torch

import pycam_fast
from pycam_fast import _compiled as ops
from pycam_fast import reference as ref
from pycam_fast.utils import _table, colormap_lut

if ops.extension_error() is not None:
    pytest.skip(f"pycam_fast._C is not built: {ops.extension_error()}", allow_module_level=True)

# (feature spatial size, output size): identity, odd non-multiple upsampling factors, 1x1, 3-D and 1-D.
CASES = [
    ((7, 7), None),
    ((7, 7), (13, 29)),
    ((3, 5), (9, 4)),
    ((1, 1), (5, 6)),
    ((2, 3, 4), (5, 7, 9)),
    ((5,), (11,)),
]
CHANNELS = [1, 3, 17, 512]
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
    # fp16/bf16 are compared with a float64 oracle: the kernels accumulate in fp32, so the error is the final
    # rounding (2^-11 / 2^-8 of the value) plus the rounding of the output of each op.
    torch.float16: {"atol": 4e-3, "rtol": 4e-3},
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    tol = TOL[dtype]
    assert actual.shape == expected.shape
    assert not torch.isnan(actual).any() or torch.isnan(expected).any()
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=tol["atol"] * scale, rtol=tol["rtol"], equal_nan=True
    )


def _oracle(fn, *tensors: torch.Tensor, **kwargs):
    """Reference result in float64 (the oracle for low precision kernels)."""
    return fn(*[t.double() for t in tensors], **kwargs)


def test_backend_registered_and_build_info() -> None:
    info = ops.build_info()
    assert info["available"] and info["torch_version"] == torch.__version__
    assert {"cuda", "cuda_arch_list", "compiler", "ops"} <= set(info)
    assert pycam_fast.backends()["cpp"]["available"]
    from pycam_fast.registry import get_ops

    assert get_ops("cpp", "cpu").cam_step is ops.cam_step


# --------------------------------------------------------------------------------------------------- cam_step


def _cam_cases():
    for c in CHANNELS:
        for spatial, out in CASES:
            if c == 512 and len(spatial) == 3:
                continue  # C=512 with the small maps only, to keep the file fast
            yield c, spatial, out


@pytest.mark.parametrize(("c", "spatial", "out"), list(_cam_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_cam_step_matches_reference(c, spatial, out, dtype, batch) -> None:
    a = _randn(batch, c, *spatial, seed=1, dtype=dtype)
    w = _randn(batch, c, seed=2, dtype=dtype)
    for kwargs in ({}, {"relu": False}, {"normalize": False}, {"relu": False, "normalize": False}):
        expected = ref.cam_step(w, a, output_size=out, **kwargs)
        if kwargs.get("normalize", True) and a[0, 0].numel() == 1:
            # A 1x1 map is constant: the exact CAM is 0. The reference resizes it first and min-max then blows the
            # ulp noise of `v * l0 + v * l1` up to O(1) values; the kernels detect the constant map.
            expected = torch.zeros_like(expected)
        actual = ops.cam_step(w, a, output_size=out, **kwargs)
        assert actual.dtype == dtype
        _close(actual, expected, dtype, scale=float(expected.abs().max()) if not kwargs.get("normalize", 1) else 1)


def test_cam_step_large_upsample() -> None:
    a, w = _randn(2, 17, 3, 5, seed=3), _randn(2, 17, seed=4)
    _close(ops.cam_step(w, a, output_size=(224, 224)), ref.cam_step(w, a, output_size=(224, 224)), torch.float32)


@pytest.mark.parametrize(
    ("spatial", "out"),
    [
        ((7, 7), (224, 224)),  # 14 x 14 candidates of 224 x 224
        ((9, 13), (4, 5)),  # downsampling: every output coordinate is a candidate
        ((7, 7), (7, 3)),  # identity along H, downsampling along W
        ((3, 8), (31, 8)),
        ((4, 6, 5), (2, 9, 3)),
        ((2,), (17,)),
    ],
)
@pytest.mark.parametrize("relu", [True, False])
def test_cam_step_minmax_from_extreme_candidates(spatial, out, relu) -> None:
    """The kernels take min/max over the extreme candidates only (kernel_math.h): each map still spans [0, 1).

    (All-zero maps are allowed: with ReLU a map with no positive value is constant 0.)
    """
    a, w = _randn(3, 5, *spatial, seed=11, dtype=torch.float64), _randn(3, 5, seed=12, dtype=torch.float64)
    actual = ops.cam_step(w, a, output_size=out, relu=relu)
    _close(actual, ref.cam_step(w, a, output_size=out, relu=relu), torch.float64)
    flat = actual.flatten(1)
    assert torch.equal(flat.amin(1), torch.zeros(3, dtype=torch.float64))
    top = flat.amax(1)
    assert bool((((top - 1).abs() < 1e-6) | (top == 0)).all()), top


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("spatial", "out"), [((7, 7), (13, 29)), ((2, 3, 4), (5, 7, 9))])
def test_cam_step_low_precision(dtype, spatial, out) -> None:
    a = _randn(2, 17, *spatial, seed=5, dtype=dtype)
    w = _randn(2, 17, seed=6, dtype=dtype)
    actual = ops.cam_step(w, a, output_size=out)
    assert actual.dtype == dtype
    _close(actual, _oracle(ref.cam_step, w, a, output_size=out), dtype)
    raw = ops.cam_step(w, a, output_size=out, normalize=False, relu=False)
    expected = _oracle(ref.cam_step, w, a, output_size=out, normalize=False, relu=False)
    _close(raw, expected, dtype, scale=float(expected.abs().max()))


@pytest.mark.parametrize("spatial", [(7, 7), (2, 3, 4)])
def test_cam_step_weight_forms(spatial) -> None:
    a = _randn(3, 17, *spatial, seed=7)
    out = tuple(2 * s + 1 for s in spatial)
    for w in (_randn(1, 17, seed=8), _randn(3, 17, *spatial, seed=9)):  # broadcast (1, C) and LayerCAM full
        _close(ops.cam_step(w, a, output_size=out), ref.cam_step(w, a, output_size=out), torch.float32)


def test_cam_step_mixed_dtypes_promote() -> None:
    a, w = _randn(2, 17, 7, 7, seed=10, dtype=torch.float16), _randn(2, 17, seed=11, dtype=torch.float64)
    actual = ops.cam_step(w, a, output_size=(9, 9))
    assert actual.dtype == torch.float64
    _close(actual, ref.cam_step(w, a, output_size=(9, 9)), torch.float64)


def test_cam_step_noncontiguous_and_channels_last() -> None:
    base = _randn(3, 17, 14, 7, seed=12)
    strided = base[:, :, ::2]  # non-contiguous (7x7 view)
    cl = _randn(3, 17, 7, 7, seed=13).contiguous(memory_format=torch.channels_last)
    w = _randn(17, 3, seed=14).t()  # non-contiguous (3, 17) weights
    for a in (strided, cl):
        _close(ops.cam_step(w, a, output_size=(13, 29)), ref.cam_step(w, a, output_size=(13, 29)), torch.float32)


@pytest.mark.parametrize("out", [None, (13, 29), (224, 224)])
def test_cam_step_constant_maps_are_zero(out) -> None:
    a = torch.full((2, 5, 7, 7), 0.3)
    for w in (torch.zeros(2, 5), torch.ones(2, 5), -torch.ones(2, 5)):
        for relu in (True, False):
            cam = ops.cam_step(w, a, output_size=out, relu=relu)
            assert not torch.isnan(cam).any()
            assert torch.equal(cam, torch.zeros_like(cam)), (w[0, 0], relu)


def test_cam_step_nan_activations_are_skipped() -> None:
    a = _randn(2, 17, 7, 7, seed=15)
    a[0, 3, 2, 2] = float("nan")
    a[1, :, 0, 0] = float("nan")  # every product NaN at one location: nansum gives 0 there
    w = _randn(2, 17, seed=16)
    for kwargs in ({}, {"normalize": False, "relu": False}):
        expected = ref.cam_step(w, a, output_size=(13, 29), **kwargs)
        actual = ops.cam_step(w, a, output_size=(13, 29), **kwargs)
        assert not torch.isnan(actual).any()
        _close(actual, expected, torch.float32, scale=float(expected.abs().max()))


# ---------------------------------------------------------------------------------------------- weights ops

WEIGHT_OPS = ["gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"]
_NEEDS_ACTS = {"xgradcam_weights", "gradcampp_weights"}


def _weights(name: str, impl, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    fn = getattr(impl, name)
    return fn(g, a) if name in _NEEDS_ACTS else fn(g)


@pytest.mark.parametrize("name", WEIGHT_OPS)
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("spatial", [(1, 1), (3, 5), (7, 7), (2, 3, 4), (5,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_match_reference(name, c, spatial, dtype) -> None:
    batch = 1 if c == 512 else 2
    g = _randn(batch, c, *spatial, seed=20, dtype=dtype)
    g[..., 0] = 0  # exercise the g^2 == 0 branch of Grad-CAM++
    a = _randn(batch, c, *spatial, seed=21, dtype=dtype).abs()  # post-ReLU activations: sum_S(A) > 0
    expected = _weights(name, ref, g, a)
    actual = _weights(name, ops, g, a)
    assert actual.shape == (batch, c) and actual.dtype == dtype
    _close(actual, expected, dtype, scale=max(1.0, float(expected.abs().max())))


@pytest.mark.parametrize("name", WEIGHT_OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_low_precision(name, dtype) -> None:
    g = _randn(2, 17, 7, 7, seed=22, dtype=dtype)
    a = _randn(2, 17, 7, 7, seed=23, dtype=dtype).abs()
    actual = _weights(name, ops, g, a)
    assert actual.dtype == dtype
    expected = _weights(name, ref, g.double(), a.double())
    _close(actual, expected, dtype, scale=max(1.0, float(expected.abs().max())))


@pytest.mark.parametrize("name", WEIGHT_OPS)
def test_weights_noncontiguous_and_channels_last(name) -> None:
    g = _randn(2, 17, 7, 7, seed=24).contiguous(memory_format=torch.channels_last)
    a = _randn(2, 17, 14, 7, seed=25).abs()[:, :, ::2]
    _close(_weights(name, ops, g, a), _weights(name, ref, g, a), torch.float32, scale=10.0)


def test_gradcampp_moments_delegate_to_reference() -> None:
    g, a = _randn(2, 5, 7, 7, seed=26), _randn(2, 5, 7, 7, seed=27).abs()
    g2, g3 = g * g * 0.9, g * g * g * 1.1
    expected = ref.gradcampp_weights(g, a, grads_sq=g2, grads_cube=g3)
    torch.testing.assert_close(ops.gradcampp_weights(g, a, grads_sq=g2, grads_cube=g3), expected)


def test_autograd_inputs_delegate_to_reference() -> None:
    g = _randn(2, 5, 7, 7, seed=28).requires_grad_()
    ops.gradcam_weights(g).sum().backward()
    torch.testing.assert_close(g.grad, torch.full_like(g, 1 / 49))


# ------------------------------------------------------------------------------------------- masked_inputs

MASK_CASES = [  # (N, C, feature size, input size, shared input)
    (2, 3, (7, 7), (13, 29), False),
    (1, 17, (3, 5), (8, 6), True),
    (3, 4, (2, 3, 4), (5, 7, 9), False),
    (2, 3, (5,), (11,), False),
    (2, 3, (1, 1), (4, 5), True),
]


@pytest.mark.parametrize(("n", "c", "feat", "size", "shared"), MASK_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_inputs_match_reference(n, c, feat, size, shared, dtype) -> None:
    a = _randn(n, c, *feat, seed=30, dtype=dtype)
    x = _randn(1 if shared else n, 3, *size, seed=31, dtype=dtype)
    start, stop = 1, n * c - 1
    noise = _randn(stop - start, *size, seed=32, dtype=dtype) * 0.1
    for kwargs in ({}, {"noise": noise}, {"scale": 0.25}, {"noise": noise, "scale": 3.0, "channels_last": True}):
        expected = ref.masked_inputs(a, x, start, stop, **kwargs)
        actual = ops.masked_inputs(a, x, start, stop, **kwargs)
        assert actual.shape == expected.shape and actual.dtype == dtype
        if kwargs.get("channels_last") and len(size) in (2, 3):
            fmt = torch.channels_last if len(size) == 2 else torch.channels_last_3d
            assert actual.is_contiguous(memory_format=fmt)
        _close(actual, expected, dtype, scale=float(expected.abs().max()))


def test_masked_inputs_large_upsample() -> None:
    a, x = _randn(1, 4, 3, 5, seed=33), _randn(1, 3, 224, 224, seed=34)
    _close(ops.masked_inputs(a, x, 0, 4), ref.masked_inputs(a, x, 0, 4), torch.float32, scale=5.0)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_inputs_out_dtype(out_dtype, channels_last) -> None:
    a, x = _randn(2, 5, 7, 7, seed=35), _randn(2, 3, 13, 29, seed=36)
    actual = ops.masked_inputs(a, x, 2, 9, out_dtype=out_dtype, channels_last=channels_last)
    assert actual.dtype == out_dtype
    expected = ref.masked_inputs(a.double(), x.double(), 2, 9)
    _close(actual, expected, out_dtype, scale=float(expected.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_inputs_low_precision_inputs(dtype) -> None:
    a, x = _randn(2, 5, 7, 7, seed=37, dtype=dtype), _randn(2, 3, 13, 29, seed=38, dtype=dtype)
    actual = ops.masked_inputs(a, x, 0, 10)
    assert actual.dtype == dtype
    expected = ref.masked_inputs(a.double(), x.double(), 0, 10)
    _close(actual, expected, dtype, scale=float(expected.abs().max()))


def test_masked_inputs_noncontiguous_and_constant_channels() -> None:
    a = _randn(2, 5, 14, 7, seed=39)[:, :, ::2]
    a[0, 1] = 2.0  # constant channel: mask 0 (never NaN)
    x = _randn(2, 3, 13, 29, seed=40).contiguous(memory_format=torch.channels_last)
    actual = ops.masked_inputs(a, x, 0, 10)
    assert not torch.isnan(actual).any() and torch.equal(actual[1], torch.zeros_like(actual[1]))
    _close(actual, ref.masked_inputs(a, x, 0, 10), torch.float32, scale=5.0)


def test_masked_inputs_nearest_delegates() -> None:
    a, x = _randn(2, 5, 7, 7, seed=41), _randn(2, 3, 13, 29, seed=42)
    expected = ref.masked_inputs(a, x, 0, 10, mode="nearest")
    torch.testing.assert_close(ops.masked_inputs(a, x, 0, 10, mode="nearest"), expected)


# ------------------------------------------------------------------------------------------------- overlay

# (image size, map size): 32x upsampling, odd factors, a 1x1 map, identity, and H downsampling (16 -> 5).
OVERLAY_SIZES = [((224, 224), (7, 7)), ((7, 13), (7, 7)), ((31, 17), (3, 5)), ((7, 13), (1, 1)), ((9, 13), (9, 13))]
OVERLAY_SIZES += [((5, 40), (16, 3))]
IMAGE_DTYPES = [torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16]
MAP_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _blend_table(colormap: str = "jet", alpha: float = 0.5) -> torch.Tensor:
    return _table("blend", colormap, alpha, "cpu")


def _overlay_inputs(batch, size, cam_size, image_dtype, cam_dtype, seed=0):
    gen = _gen(seed)
    images = torch.rand(batch, 3, *size, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # some outside [0, 1]
    if image_dtype == torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    cams = torch.rand(batch, *cam_size, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    return images.to(image_dtype), cams.to(cam_dtype)


def _assert_equal_u8(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.uint8 and actual.shape == expected.shape and actual.is_contiguous()
    diff = (actual.int() - expected.int()).abs()
    assert int(diff.max()) == 0, f"{int((diff > 0).sum())} of {diff.numel()} values differ, by up to {int(diff.max())}"


@pytest.mark.parametrize(("size", "cam_size"), OVERLAY_SIZES)
@pytest.mark.parametrize("image_dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("cam_dtype", MAP_DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_overlay_equals_reference(size, cam_size, image_dtype, cam_dtype, batch) -> None:
    images, cams = _overlay_inputs(batch, size, cam_size, image_dtype, cam_dtype, seed=batch)
    table = _blend_table()
    _assert_equal_u8(ops.overlay(images, cams, table), ref.overlay(images, cams, table))


def test_overlay_is_rounding_exact_at_scale() -> None:
    # A last-bit difference in the resize moves the truncated LUT index only when the value lies within an ulp of an
    # integer, ~1 pixel in 300k. On these 3.2M pixels (the benchmark shape), a fused multiply-add in the blend,
    # torch.lerp's formula or blending H before W changes 11, 11 and 14 pixels: this test catches all three.
    gen = _gen(7)
    cams = torch.rand(64, 7, 7, generator=gen)
    images = torch.randint(0, 256, (64, 3, 224, 224), generator=gen, dtype=torch.uint8)
    table = _blend_table("jet", 0.0)
    _assert_equal_u8(ops.overlay(images, cams, table), ref.overlay(images, cams, table))


@pytest.mark.parametrize("colormap", ["jet", "viridis", "gray", "magma"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_colormaps_and_alphas(colormap, alpha) -> None:
    images, cams = _overlay_inputs(2, (31, 17), (3, 5), torch.float32, torch.float32, seed=3)
    table = _blend_table(colormap, alpha)
    _assert_equal_u8(ops.overlay(images, cams, table), ref.overlay(images, cams, table))


def test_overlay_noncontiguous_inputs() -> None:
    table = _blend_table()
    for image_dtype in (torch.uint8, torch.float32):
        base, cams = _overlay_inputs(3, (40, 60), (5, 3), image_dtype, torch.float32, seed=4)
        cams_t = cams.transpose(1, 2).contiguous().transpose(1, 2)  # (N, 5, 3) with swapped strides
        nhwc = base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last (N, 3, H, W) view
        for images in (base[:, :, ::2, 1::3], nhwc, base.flip(0)[:, [2, 0, 1]]):
            expected = ref.overlay(images.contiguous(), cams, table)
            _assert_equal_u8(ops.overlay(images, cams_t, table), expected)
            _assert_equal_u8(ref.overlay(images, cams_t, table), expected)


def test_overlay_constant_maps() -> None:
    # 255 * 0.37 + 0.5 = 94.85 blended with weights summing to 1 stays in (94, 95): one colour everywhere.
    images = torch.rand(2, 3, 23, 31, generator=_gen(5))
    cams = torch.full((2, 4, 6), 0.37)
    out = ops.overlay(images, cams, _blend_table("jet", 0.0))
    colour = colormap_lut("jet")[94]
    assert torch.equal(out, colour.view(1, 3, 1, 1).expand_as(out))


def test_overlay_nan_and_inf_like_reference() -> None:
    table = _blend_table()
    images, cams = _overlay_inputs(2, (13, 29), (7, 7), torch.float32, torch.float32, seed=6)
    images[0, 1, 2, 3], images[1, 0, 0, 0], images[1, 2, 5, 5] = float("nan"), float("inf"), -float("inf")
    cams[0, 3, 3], cams[1, 0, :] = float("nan"), float("inf")
    out = ops.overlay(images, cams, table)
    _assert_equal_u8(out, ref.overlay(images, cams, table))
    clean_images = images.nan_to_num(0.0).clamp(0, 1)  # NaN counts as 0, +-inf as the nearest bound
    clean_cams = cams.nan_to_num(0.0).clamp(0, 1)
    _assert_equal_u8(out, ops.overlay(clean_images, clean_cams, table))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        low_images, low_cams = images.to(dtype), cams.to(dtype)
        _assert_equal_u8(ops.overlay(low_images, low_cams, table), ref.overlay(low_images, low_cams, table))


def test_overlay_bf16_white_stays_in_range() -> None:
    # In bf16, 255 * 1 + 0.5 rounds to 256 (one past the table row): the pixel bytes are computed in fp32.
    images = torch.ones(1, 3, 4, 4, dtype=torch.bfloat16)
    out = ops.overlay(images, torch.zeros(1, 2, 2), _blend_table("jet", 1.0))
    assert torch.equal(out, torch.full_like(out, 255))
    assert torch.equal(ref.overlay(images, torch.zeros(1, 2, 2), _blend_table("jet", 1.0)), out)


def test_overlay_float8() -> None:
    # Maps of any float dtype are converted to fp32 in the op; float8 images go to the reference.
    images, cams = _overlay_inputs(2, (13, 29), (3, 5), torch.float32, torch.float32, seed=9)
    table = _blend_table()
    for f8_images, f8_cams in ((images, cams.to(torch.float8_e4m3fn)), (images.to(torch.float8_e5m2), cams)):
        _assert_equal_u8(ops.overlay(f8_images, f8_cams, table), ref.overlay(f8_images, f8_cams, table))


def test_overlay_empty_images() -> None:
    table = _blend_table()
    assert ops.overlay(torch.rand(0, 3, 4, 4), torch.rand(0, 2, 2), table).shape == (0, 3, 4, 4)
    assert ops.overlay(torch.rand(2, 3, 0, 4), torch.rand(2, 2, 2), table).shape == (2, 3, 0, 4)


@pytest.mark.parametrize(
    ("images", "cams", "table", "match"),
    [
        (torch.rand(3, 4, 4), torch.rand(3, 2, 2), None, r"images must be \(N, 3, H, W\), got \[3, 4, 4\]"),
        (torch.rand(1, 4, 4, 4), torch.rand(1, 2, 2), None, r"images must be \(N, 3, H, W\)"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int32), torch.rand(1, 2, 2), None, "images must be uint8 or float"),
        (torch.rand(2, 3, 4, 4), torch.rand(1, 2, 2), None, r"cams must be \(N, h, w\) with N = 2"),
        (torch.rand(1, 3, 4, 4), torch.rand(1, 1, 2, 2), None, r"cams must be \(N, h, w\)"),
        (torch.rand(1, 3, 4, 4), torch.rand(1, 0, 2), None, "cams must have positive h and w"),
        (torch.rand(1, 3, 4, 4), torch.zeros(1, 2, 2, dtype=torch.uint8), None, "cams must be float16"),
        (torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), torch.zeros(3, 256, dtype=torch.uint8), "table must be a"),
        (torch.rand(1, 3, 4, 4), torch.rand(1, 2, 2), torch.zeros(3, 65536), "table must be a"),
    ],
)
def test_overlay_bad_arguments(images, cams, table, match) -> None:
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pycam_fast.overlay(images, cams, _blend_table() if table is None else table)


def test_overlay_torch_compile_fullgraph() -> None:
    images, cams = _overlay_inputs(2, (31, 17), (3, 5), torch.float32, torch.float32, seed=8)
    table = _blend_table()
    compiled = torch.compile(lambda i, c: torch.ops.pycam_fast.overlay(i, c, table), fullgraph=True)
    _assert_equal_u8(compiled(images, cams), ref.overlay(images, cams, table))


# --------------------------------------------------------------------------------------------- op contract


def test_bad_arguments_raise_clear_errors() -> None:
    a = torch.randn(2, 5, 7, 7)
    with pytest.raises(RuntimeError, match="pycam_fast::cam_step"):
        torch.ops.pycam_fast.cam_step(torch.randn(2, 4), a)
    with pytest.raises(RuntimeError, match="share a dtype"):
        torch.ops.pycam_fast.cam_step(torch.randn(2, 5, dtype=torch.float64), a)
    with pytest.raises(RuntimeError, match="start"):
        torch.ops.pycam_fast.masked_inputs(a, torch.randn(2, 3, 9, 9), 4, 11)
    with pytest.raises(RuntimeError, match="must match grads"):
        torch.ops.pycam_fast.xgradcam_weights(a, torch.randn(2, 5, 7, 6))


def _opcheck_cases():
    a, w = torch.randn(2, 5, 7, 7), torch.randn(2, 5)
    g = torch.randn(2, 5, 7, 7)
    x, noise = torch.randn(2, 3, 13, 11), torch.randn(6, 13, 11)
    pf = torch.ops.pycam_fast
    return [
        (pf.cam_step.default, (w, a, True, [13, 29], True, 1e-8)),
        (pf.cam_step.default, (torch.randn(1, 5), torch.randn(2, 5, 2, 3, 4), False, None, False, 1e-8)),
        (pf.gradcam_weights.default, (g,)),
        (pf.xgradcam_weights.default, (g, a, 1e-8)),
        (pf.gradcampp_weights.default, (g, a.abs(), 1e-8)),
        (pf.gradcampp_weights_torchcam.default, (g,)),
        (pf.masked_inputs.default, (a, x, 2, 8, noise, 0.5, torch.float16, True, 1e-8)),
        (pf.masked_inputs.default, (a, x, 0, 10, None, 1.0, None, False, 1e-8)),
        (pf.overlay.default, (torch.rand(2, 3, 13, 11), torch.rand(2, 3, 5), _blend_table())),
        (pf.overlay.default, (torch.randint(0, 256, (2, 13, 11, 3), dtype=torch.uint8).permute(0, 3, 1, 2),
                              torch.rand(2, 3, 5, dtype=torch.float64), _blend_table("viridis", 0.3))),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(10))
def test_opcheck(case) -> None:
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph() -> None:
    def cam(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        w = torch.ops.pycam_fast.gradcampp_weights(g, a, 1e-8)
        return torch.ops.pycam_fast.cam_step(w, a, True, [13, 29], True, 1e-8)

    g, a = _randn(2, 5, 7, 7, seed=43), _randn(2, 5, 7, 7, seed=44).abs()
    compiled = torch.compile(cam, fullgraph=True)
    torch.testing.assert_close(compiled(g, a), ref.cam_step(ref.gradcampp_weights(g, a), a, output_size=(13, 29)))
