"""``overlay``: the compiled kernels equal the reference bit for bit, and ``pycam_fast.utils.overlay`` meets its spec.

Triton has no overlay kernel (a table lookup): ``backend="triton"`` runs the reference (test_dispatch.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from tolerances import COMPILED_TARGETS, call, require

from pycam_fast.ops import reference as ref
from pycam_fast.utils import _table, colormap_lut, overlay

compiled = pytest.mark.parametrize(("backend", "device"), COMPILED_TARGETS)
#: ``utils.overlay`` spec tests: the reference and the compiled op on CPU tensors
SPEC_BACKENDS = [pytest.param("torch", "cpu", id="torch"), COMPILED_TARGETS[0]]

# (image size, map size): ~15x upsampling (32x: test_rounding_exact_at_scale), odd factors, a 1x1 map, identity,
# H downsampling (16 -> 5)
SIZES = [((97, 112), (7, 7)), ((7, 13), (7, 7)), ((31, 17), (3, 5)), ((7, 13), (1, 1)), ((9, 13), (9, 13))]
SIZES += [((5, 40), (16, 3))]
IMAGE_DTYPES = [torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16]
MAP_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _blend_table(colormap: str = "jet", alpha: float = 0.5, device: str = "cpu") -> torch.Tensor:
    return _table("blend", colormap, alpha, device)


def _inputs(batch, size, cam_size, image_dtype, cam_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, *size, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # some outside [0, 1]
    if image_dtype == torch.uint8:
        images = (images.clamp(0, 1) * 255).round()
    cams = torch.rand(batch, *cam_size, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    return images.to(image_dtype), cams.to(cam_dtype)


def _assert_equal_u8(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.uint8 and actual.shape == expected.shape and actual.is_contiguous()
    diff = (actual.cpu().int() - expected.cpu().int()).abs()
    bad = int((diff > 0).sum())
    assert bad == 0, f"{bad} of {diff.numel()} values differ, by up to {int(diff.max())}"


def _run(backend: str, device: str, images, cams, table) -> torch.Tensor:
    """The op on ``device``; the expected value is the reference on CPU (the kernels' arithmetic is the CPU's)."""
    out = call("overlay", backend, images.to(device), cams.to(device), table.to(device))
    assert out.device.type == device
    return out


# --------------------------------------------------------------------------------- kernels == reference, bitwise


@compiled
@pytest.mark.parametrize(("size", "cam_size"), SIZES)
@pytest.mark.parametrize("image_dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("cam_dtype", MAP_DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
def test_equals_reference(backend, device, size, cam_size, image_dtype, cam_dtype, batch) -> None:
    require(backend, device)
    images, cams = _inputs(batch, size, cam_size, image_dtype, cam_dtype, seed=batch)
    table = _blend_table("viridis", 0.3)
    grid = (torch.randint(0, 256, (batch, *cam_size), generator=torch.Generator().manual_seed(9)) / 255).to(cam_dtype)
    for maps in (cams, grid):  # random values and LUT-index boundary values k / 255
        _assert_equal_u8(_run(backend, device, images, maps, table), ref.overlay(images, maps, table))


@compiled
def test_rounding_exact_at_scale(backend, device) -> None:
    """A last-bit difference in the resize moves a truncated LUT index ~once in 300k pixels: on these 3.2M pixels an
    FMA in the blend, torch.lerp's formula or blending H before W change 11, 11 and 14 pixels."""
    require(backend, device)
    gen = torch.Generator().manual_seed(7)
    cams = torch.rand(64, 7, 7, generator=gen)
    images = torch.randint(0, 256, (64, 3, 224, 224), generator=gen, dtype=torch.uint8)
    table = _blend_table("jet", 0.0)
    _assert_equal_u8(_run(backend, device, images, cams, table), ref.overlay(images, cams, table))


@compiled
@pytest.mark.parametrize("colormap", ["jet", "viridis", "gray", "magma"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_colormaps_and_alphas(backend, device, colormap, alpha) -> None:
    require(backend, device)
    images, cams = _inputs(2, (31, 17), (3, 5), torch.float32, torch.float32, seed=3)
    table = _blend_table(colormap, alpha)
    _assert_equal_u8(_run(backend, device, images, cams, table), ref.overlay(images, cams, table))


@compiled
def test_noncontiguous_inputs(backend, device) -> None:
    require(backend, device)
    table = _blend_table().to(device)
    for image_dtype in (torch.uint8, torch.float32):
        base, cams = _inputs(3, (40, 60), (5, 3), image_dtype, torch.float32, seed=4)
        base, cams = base.to(device), cams.to(device)
        cams_t = cams.transpose(1, 2).contiguous().transpose(1, 2)  # (N, 5, 3) with swapped strides
        nhwc = base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last (N, 3, H, W) view
        for images in (base[:, :, ::2, 1::3], nhwc, base.flip(0)[:, [2, 0, 1]]):
            expected = ref.overlay(images.cpu().contiguous(), cams.cpu(), table.cpu())
            _assert_equal_u8(call("overlay", backend, images, cams_t, table), expected)
            _assert_equal_u8(ref.overlay(images.cpu(), cams_t.cpu(), table.cpu()), expected)


@compiled
def test_constant_maps(backend, device) -> None:
    # 255 * 0.37 + 0.5 = 94.85 blended with weights summing to 1 stays in (94, 95): one colour everywhere.
    require(backend, device)
    images = torch.rand(2, 3, 23, 31, generator=torch.Generator().manual_seed(5))
    out = _run(backend, device, images, torch.full((2, 4, 6), 0.37), _blend_table("jet", 0.0)).cpu()
    colour = colormap_lut("jet")[94]
    assert torch.equal(out, colour.view(1, 3, 1, 1).expand_as(out))


@compiled
def test_nan_and_inf_like_reference(backend, device) -> None:
    require(backend, device)
    table = _blend_table()
    images, cams = _inputs(2, (13, 29), (7, 7), torch.float32, torch.float32, seed=6)
    images[0, 1, 2, 3], images[1, 0, 0, 0], images[1, 2, 5, 5] = float("nan"), float("inf"), -float("inf")
    cams[0, 3, 3], cams[1, 0, :] = float("nan"), float("inf")
    out = _run(backend, device, images, cams, table)
    _assert_equal_u8(out, ref.overlay(images, cams, table))
    clean_images = images.nan_to_num(0.0).clamp(0, 1)  # NaN counts as 0, +-inf as the nearest bound
    _assert_equal_u8(out, _run(backend, device, clean_images, cams.nan_to_num(0.0).clamp(0, 1), table))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        low_images, low_cams = images.to(dtype), cams.to(dtype)
        _assert_equal_u8(_run(backend, device, low_images, low_cams, table), ref.overlay(low_images, low_cams, table))


@compiled
def test_bf16_white_stays_in_range(backend, device) -> None:
    # In bf16, 255 * 1 + 0.5 rounds to 256 (one past the table row): the pixel bytes are computed in fp32.
    require(backend, device)
    images, table = torch.ones(1, 3, 4, 4, dtype=torch.bfloat16), _blend_table("jet", 1.0)
    out = _run(backend, device, images, torch.zeros(1, 2, 2), table)
    assert torch.equal(out.cpu(), torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    _assert_equal_u8(out, ref.overlay(images, torch.zeros(1, 2, 2), table))


@compiled
def test_float8_maps(backend, device) -> None:
    """Maps of any float dtype go to fp32 in the kernel (float8 images are routed to the reference: test_dispatch)."""
    require(backend, device)
    images, cams = _inputs(2, (13, 29), (3, 5), torch.float32, torch.float32, seed=9)
    f8 = cams.to(torch.float8_e4m3fn)
    _assert_equal_u8(_run(backend, device, images, f8, _blend_table()), ref.overlay(images, f8, _blend_table()))


@compiled
def test_empty_images(backend, device) -> None:
    require(backend, device)
    table = _blend_table()
    assert _run(backend, device, torch.rand(0, 3, 4, 4), torch.rand(0, 2, 2), table).shape == (0, 3, 4, 4)
    assert _run(backend, device, torch.rand(2, 3, 0, 4), torch.rand(2, 2, 2), table).shape == (2, 3, 0, 4)


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
def test_kernel_bad_arguments(images, cams, table, match) -> None:
    require("cpp", "cpu")
    with pytest.raises(RuntimeError, match=match):
        torch.ops.pycam_fast.overlay(images, cams, _blend_table() if table is None else table)


@pytest.mark.cuda
def test_kernel_mixed_devices() -> None:
    require("cuda", "cuda")
    images, table = torch.rand(2, 3, 9, 9, device="cuda"), _blend_table()
    with pytest.raises(RuntimeError, match="cams is on cpu"):
        torch.ops.pycam_fast.overlay(images, torch.rand(2, 3, 3), table.cuda())
    with pytest.raises(RuntimeError, match="table is on cpu"):
        torch.ops.pycam_fast.overlay(images, torch.rand(2, 3, 3, device="cuda"), table)


# ------------------------------------------------------------------------------------ utils.overlay: the spec


def _require_spec(backend: str, device: str) -> None:
    if backend != "torch":
        require(backend, device)


def _spec(image: torch.Tensor, cam: torch.Tensor, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Per-image spec of ``utils.overlay``'s docstring, with numpy, matplotlib and F.interpolate."""
    if image.dtype != torch.uint8:
        image = torch.floor(255 * image.clamp(0, 1) + 0.5).to(torch.uint8)
    pixels = image.double().numpy()  # (3, H, W)
    scaled = (255 * cam.clamp(0, 1) + 0.5)[None, None]
    up = F.interpolate(scaled, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    k = np.floor(up.numpy()).astype(np.int64).clip(0, 255)
    lut = colormaps[cmap](np.arange(256) / 255.0, bytes=True)[:, :3].astype(np.float64)  # (256, 3)
    colours = lut[k].transpose(2, 0, 1)  # (3, H, W)
    return np.floor(alpha * pixels + (1 - alpha) * colours + 0.5).astype(np.uint8)


def _check_spec(images: torch.Tensor, cams: torch.Tensor, exact: bool, backend: str, **kwargs) -> None:
    out = overlay(images, cams, backend=backend, **kwargs)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(images.shape[0]):
        diff = np.abs(out[i].numpy().astype(np.int16) - _spec(images[i], cams[i], **kwargs).astype(np.int16))
        if exact:
            assert diff.max() == 0
        else:  # F.interpolate rounds differently from the fp32 `v0 * l0 + v1 * l1` of the spec: a LUT index may move
            assert (diff > 0).mean() < 0.01 and diff.max() <= 8


@pytest.mark.parametrize(("backend", "device"), SPEC_BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_spec_same_size(backend, device, batch, dtype) -> None:
    _require_spec(backend, device)
    gen = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 3, 9, 13, generator=gen)
    images = (images * 255).to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
    _check_spec(images, torch.rand(batch, 9, 13, generator=gen), exact=True, backend=backend)


@pytest.mark.parametrize(("backend", "device"), SPEC_BACKENDS)
@pytest.mark.parametrize(("size", "cam_size"), [((17, 23), (3, 5)), ((64, 64), (16, 16)), ((31, 7), (4, 9))])
def test_spec_resized(backend, device, size, cam_size) -> None:
    _require_spec(backend, device)
    gen = torch.Generator().manual_seed(0)
    images, cams = torch.rand(4, 3, *size, generator=gen), torch.rand(4, *cam_size, generator=gen)
    _check_spec(images, cams, exact=False, backend=backend)


@pytest.mark.parametrize(("backend", "device"), SPEC_BACKENDS)
def test_spec_alpha_colormap_and_clamping(backend, device) -> None:
    _require_spec(backend, device)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 8, 8, generator=gen) * 1.4 - 0.2  # out of range: clamped
    cams = torch.rand(2, 8, 8, generator=gen) * 1.6 - 0.3
    out = overlay(images, cams, colormap="viridis", alpha=0.3, backend=backend)
    for i in range(2):
        np.testing.assert_array_equal(out[i].numpy(), _spec(images[i], cams[i], cmap="viridis", alpha=0.3))


@pytest.mark.parametrize(("backend", "device"), SPEC_BACKENDS)
def test_spec_alpha_extremes(backend, device) -> None:
    _require_spec(backend, device)
    images = (torch.rand(2, 3, 5, 6) * 255).to(torch.uint8)
    cams = torch.rand(2, 5, 6)
    assert torch.equal(overlay(images, cams, alpha=1.0, backend=backend), images)
    heat = overlay(images, cams, alpha=0.0, backend=backend)
    k = torch.floor(255 * cams + 0.5).long()
    assert torch.equal(heat, colormap_lut("jet")[k].permute(0, 3, 1, 2))


@pytest.mark.parametrize(("backend", "device"), SPEC_BACKENDS)
def test_spec_nan_counts_as_zero(backend, device) -> None:
    _require_spec(backend, device)
    images = torch.rand(1, 3, 4, 4)
    images[0, :, 1, 2] = float("nan")
    cams = torch.full((1, 4, 4), float("nan"))
    zeros = overlay(images.nan_to_num(0.0), torch.zeros(1, 4, 4), backend=backend)
    np.testing.assert_array_equal(overlay(images, cams, backend=backend).numpy(), zeros.numpy())


def test_lut_matches_matplotlib_and_is_cached() -> None:
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == torch.uint8
    np.testing.assert_array_equal(lut.numpy(), colormaps["jet"](np.linspace(0, 1, 256), bytes=True)[:, :3])
    assert colormap_lut("jet") is lut
    assert colormap_lut(colormaps["viridis"]).shape == (256, 3)


def test_auto_equals_torch() -> None:
    gen = torch.Generator().manual_seed(2)
    images, cams = torch.rand(3, 3, 37, 29, generator=gen), torch.rand(3, 5, 4, generator=gen)
    assert torch.equal(overlay(images, cams), overlay(images, cams, backend="torch"))


@pytest.mark.parametrize(("backend", "match"), [("nope", "unknown backend"), ("cuda", "does not run on cpu")])
def test_bad_backend_raises(backend: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        overlay(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 2), backend=backend)


@pytest.mark.parametrize(
    ("images", "cams", "kwargs", "error"),
    [
        (np.zeros((1, 3, 4, 4)), torch.zeros(1, 4, 4), {}, TypeError),
        (torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), {}, ValueError),
        (torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4), {}, ValueError),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int32), torch.zeros(1, 4, 4), {}, TypeError),
        (torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4), {}, ValueError),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), {}, ValueError),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8), {}, TypeError),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), {"alpha": 1.5}, ValueError),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), {"colormap": "not-a-cmap"}, ValueError),
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), {"colormap": 3}, TypeError),
    ],
)
def test_errors(images, cams, kwargs, error) -> None:
    with pytest.raises(error):
        overlay(images, cams, **kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "torch", "cuda"])
def test_cuda_matches_cpu(backend: str) -> None:
    _require_spec(backend if backend == "cuda" else "torch", "cuda")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    images, cams = torch.rand(3, 3, 32, 40), torch.rand(3, 7, 9)
    out = overlay(images.cuda(), cams.cuda(), backend=backend)
    assert out.is_cuda
    assert torch.equal(out.cpu(), overlay(images, cams, backend="torch"))
