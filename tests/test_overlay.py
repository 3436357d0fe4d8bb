import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from pycam_fast.utils import colormap_lut, overlay


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


def _check(images: torch.Tensor, cams: torch.Tensor, exact: bool, **kwargs) -> None:
    out = overlay(images, cams, **kwargs)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(images.shape[0]):
        ref = _reference(images[i], cams[i], **kwargs).astype(np.int16)
        diff = np.abs(out[i].numpy().astype(np.int16) - ref)
        if exact:
            assert diff.max() == 0
        else:  # float rounding of the resize may move a LUT index by one
            assert (diff > 0).mean() < 0.01 and diff.max() <= 8


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_matches_reference_same_size(batch: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 3, 9, 13, generator=gen)
    if dtype == torch.uint8:
        images = (images * 255).to(torch.uint8)
    else:
        images = images.to(dtype)
    cams = torch.rand(batch, 9, 13, generator=gen)
    _check(images, cams, exact=True)


@pytest.mark.parametrize(("size", "cam_size"), [((17, 23), (3, 5)), ((64, 64), (16, 16)), ((31, 7), (4, 9))])
def test_matches_reference_resized(size: tuple[int, int], cam_size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, *size, generator=gen)
    cams = torch.rand(4, *cam_size, generator=gen)
    _check(images, cams, exact=False)


def test_alpha_colormap_and_clamping() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 8, 8, generator=gen) * 1.4 - 0.2  # out of range: clamped
    cams = torch.rand(2, 8, 8, generator=gen) * 1.6 - 0.3
    out = overlay(images, cams, colormap="viridis", alpha=0.3)
    for i in range(2):
        ref = _reference(images[i], cams[i], cmap="viridis", alpha=0.3)
        np.testing.assert_array_equal(out[i].numpy(), ref)


def test_alpha_extremes() -> None:
    images = (torch.rand(2, 3, 5, 6) * 255).to(torch.uint8)
    cams = torch.rand(2, 5, 6)
    assert torch.equal(overlay(images, cams, alpha=1.0), images)
    heat = overlay(images, cams, alpha=0.0)
    lut = colormap_lut("jet")
    k = torch.floor(255 * cams + 0.5).long()
    assert torch.equal(heat, lut[k].permute(0, 3, 1, 2))


def test_lut_matches_matplotlib_and_is_cached() -> None:
    lut = colormap_lut("jet")
    assert lut.shape == (256, 3) and lut.dtype == torch.uint8
    np.testing.assert_array_equal(lut.numpy(), colormaps["jet"](np.linspace(0, 1, 256), bytes=True)[:, :3])
    assert colormap_lut("jet") is lut
    assert colormap_lut(colormaps["viridis"]).shape == (256, 3)


def test_nan_maps_count_as_zero() -> None:
    images = torch.zeros(1, 3, 4, 4)
    cams = torch.full((1, 4, 4), float("nan"))
    np.testing.assert_array_equal(overlay(images, cams).numpy(), overlay(images, torch.zeros(1, 4, 4)).numpy())


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    images, cams = torch.rand(3, 3, 32, 40), torch.rand(3, 7, 9)
    out = overlay(images.cuda(), cams.cuda())
    assert out.is_cuda
    diff = (out.cpu().int() - overlay(images, cams).int()).abs()
    assert (diff > 0).float().mean() < 0.01
