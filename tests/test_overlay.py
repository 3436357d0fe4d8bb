import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from pycam_fast import _compiled, reference
from pycam_fast.registry import get_ops
from pycam_fast.utils import colormap_lut, overlay

# The compiled op equals the torch reference bit for bit, so both backends must pass the same spec tests.
BACKENDS = [
    "torch",
    pytest.param(
        "cpp", marks=pytest.mark.skipif(_compiled.extension_error() is not None, reason="pycam_fast._C is not built")
    ),
]


def _reference(image: torch.Tensor, cam: torch.Tensor, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Per-image reference of overlay's docstring spec (numpy + F.interpolate)."""
    if image.dtype != torch.uint8:
        image = torch.floor(255 * image.clamp(0, 1) + 0.5).to(torch.uint8)
    pixels = image.double().numpy()  # (3, H, W)
    scaled = (255 * cam.clamp(0, 1) + 0.5)[None, None]
    up = F.interpolate(scaled, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    k = np.floor(up.numpy()).astype(np.int64).clip(0, 255)
    lut = colormaps[cmap](np.arange(256) / 255.0, bytes=True)[:, :3].astype(np.float64)  # (256, 3)
    colours = lut[k].transpose(2, 0, 1)  # (3, H, W)
    return np.floor(alpha * pixels + (1 - alpha) * colours + 0.5).astype(np.uint8)


def _check(images: torch.Tensor, cams: torch.Tensor, exact: bool, backend: str, **kwargs) -> None:
    out = overlay(images, cams, backend=backend, **kwargs)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(images.shape[0]):
        ref = _reference(images[i], cams[i], **kwargs).astype(np.int16)
        diff = np.abs(out[i].numpy().astype(np.int16) - ref)
        if exact:
            assert diff.max() == 0
        else:  # F.interpolate rounds differently from the fp32 `v0 * l0 + v1 * l1` of the spec: a LUT index may move
            assert (diff > 0).mean() < 0.01 and diff.max() <= 8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_matches_reference_same_size(batch: int, dtype: torch.dtype, backend: str) -> None:
    gen = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 3, 9, 13, generator=gen)
    if dtype == torch.uint8:
        images = (images * 255).to(torch.uint8)
    else:
        images = images.to(dtype)
    cams = torch.rand(batch, 9, 13, generator=gen)
    _check(images, cams, exact=True, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("size", "cam_size"), [((17, 23), (3, 5)), ((64, 64), (16, 16)), ((31, 7), (4, 9))])
def test_matches_reference_resized(size: tuple[int, int], cam_size: tuple[int, int], backend: str) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, *size, generator=gen)
    cams = torch.rand(4, *cam_size, generator=gen)
    _check(images, cams, exact=False, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_colormap_and_clamping(backend: str) -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 8, 8, generator=gen) * 1.4 - 0.2  # out of range: clamped
    cams = torch.rand(2, 8, 8, generator=gen) * 1.6 - 0.3
    out = overlay(images, cams, colormap="viridis", alpha=0.3, backend=backend)
    for i in range(2):
        ref = _reference(images[i], cams[i], cmap="viridis", alpha=0.3)
        np.testing.assert_array_equal(out[i].numpy(), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_extremes(backend: str) -> None:
    images = (torch.rand(2, 3, 5, 6) * 255).to(torch.uint8)
    cams = torch.rand(2, 5, 6)
    assert torch.equal(overlay(images, cams, alpha=1.0, backend=backend), images)
    heat = overlay(images, cams, alpha=0.0, backend=backend)
    lut = colormap_lut("jet")
    k = torch.floor(255 * cams + 0.5).long()
    assert torch.equal(heat, lut[k].permute(0, 3, 1, 2))


def test_lut_matches_matplotlib_and_is_cached() -> None:
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == torch.uint8
    np.testing.assert_array_equal(lut.numpy(), colormaps["jet"](np.linspace(0, 1, 256), bytes=True)[:, :3])
    assert colormap_lut("jet") is lut
    assert colormap_lut(colormaps["viridis"]).shape == (256, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_counts_as_zero(backend: str) -> None:
    images = torch.rand(1, 3, 4, 4)
    images[0, :, 1, 2] = float("nan")
    cams = torch.full((1, 4, 4), float("nan"))
    zeros = overlay(images.nan_to_num(0.0), torch.zeros(1, 4, 4), backend=backend)
    np.testing.assert_array_equal(overlay(images, cams, backend=backend).numpy(), zeros.numpy())


@pytest.mark.skipif(_compiled.extension_error() is not None, reason="pycam_fast._C is not built")
def test_auto_uses_the_compiled_op_and_equals_torch() -> None:
    assert get_ops("auto", "cpu").overlay is _compiled.overlay
    gen = torch.Generator().manual_seed(2)
    images, cams = torch.rand(3, 3, 37, 29, generator=gen), torch.rand(3, 5, 4, generator=gen)
    assert torch.equal(overlay(images, cams), overlay(images, cams, backend="torch"))
    assert get_ops("torch", "cpu").overlay is reference.overlay


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
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cuda_matches_cpu(backend: str) -> None:
    images, cams = torch.rand(3, 3, 32, 40), torch.rand(3, 7, 9)
    out = overlay(images.cuda(), cams.cuda(), backend=backend)
    assert out.is_cuda
    assert torch.equal(out.cpu(), overlay(images, cams, backend="torch"))
