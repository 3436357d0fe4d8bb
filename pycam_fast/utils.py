"""Visualisation helpers."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import Colormap
from PIL import Image
from torch import Tensor

from . import ops

__all__ = ["colormap_lut", "overlay", "overlay_mask"]


def overlay_mask(
    img: Image.Image, mask: Image.Image, colormap: Colormap | str = "jet", alpha: float = 0.7
) -> Image.Image:
    """Blend a colour-mapped CAM over an image (TorchCAM's ``overlay_mask``: same signature, same pixels).

    The mask is resized to the image with bicubic resampling, squared, colour-mapped, and blended:
    ``alpha * img + (1 - alpha) * heatmap``.

    Args:
        img: background image (grayscale or RGB).
        mask: the CAM as a grayscale image, e.g. ``to_pil_image(cam, mode="F")`` with values in [0, 1].
        colormap: matplotlib colormap or its name.
        alpha: weight of the background image, in [0, 1).

    Returns:
        the RGB overlay.

    Raises:
        TypeError: ``img`` or ``mask`` is not a PIL image.
        ValueError: ``alpha`` outside [0, 1) or not a float, or an image that is neither grayscale nor RGB.

    """
    if not isinstance(img, Image.Image) or not isinstance(mask, Image.Image):
        raise TypeError("img and mask arguments need to be PIL.Image (convert tensors with to_pil_image)")
    if not isinstance(alpha, float) or not 0 <= alpha < 1:
        raise ValueError("alpha argument is expected to be of type float between 0 and 1 (0 <= alpha < 1)")
    if len(img.getbands()) not in {1, 3}:
        raise ValueError("img argument needs to be a grayscale or RGB image")
    heat = mask.resize(img.size, resample=Image.Resampling.BICUBIC)
    heat = colormaps.get_cmap(colormap)(np.asarray(heat) ** 2, bytes=True)[:, :, :3]
    if img.mode in {"L", "RGB"}:
        return Image.blend(Image.fromarray(heat), img.convert("RGB"), alpha)
    background = np.asarray(img)
    if background.ndim == 2:
        background = np.repeat(background[..., None], 3, axis=-1)
    return Image.fromarray((alpha * background + (1 - alpha) * heat).astype(np.uint8))


def _lut_array(colormap: Colormap | str) -> np.ndarray:
    """``(256, 3)`` uint8 RGB entries ``cmap(i / 255)`` of a matplotlib colormap."""
    if not isinstance(colormap, (str, Colormap)):
        raise TypeError(f"`colormap` must be a matplotlib colormap or its name, got {type(colormap).__name__}")
    if isinstance(colormap, str) and colormap not in colormaps:
        raise ValueError(f"unknown colormap {colormap!r}; pass a matplotlib colormap name such as 'jet' or 'viridis'")
    cmap = colormaps[colormap] if isinstance(colormap, str) else colormap
    return cmap(np.linspace(0.0, 1.0, 256), bytes=True)[:, :3]


def _blend_array(colormap: Colormap | str, alpha: float) -> np.ndarray:
    """``(3, 65536)`` uint8 table, entry ``[c, 256 * k + v] = floor(alpha * v + (1 - alpha) * lut[k, c] + 0.5)``."""
    lut = _lut_array(colormap).astype(np.float64)  # (256, 3)
    values = np.arange(256, dtype=np.float64)
    table = alpha * values[None, None, :] + (1.0 - alpha) * lut.T[:, :, None]  # (3, k, v)
    return np.floor(table + 0.5).clip(0, 255).astype(np.uint8).reshape(3, -1)


def _device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@lru_cache(maxsize=64)
def _cached_table(kind: str, name: str, alpha: float, device: torch.device) -> Tensor:
    array = _lut_array(name) if kind == "lut" else _blend_array(name, alpha)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _table(kind: str, colormap: Colormap | str, alpha: float, device: torch.device | str) -> Tensor:
    """A colour table on ``device``, cached per (colormap name, alpha, device); colormap objects are not cached."""
    if isinstance(colormap, str):
        return _cached_table(kind, colormap, alpha, _device(device))
    array = _lut_array(colormap) if kind == "lut" else _blend_array(colormap, alpha)
    return torch.from_numpy(np.ascontiguousarray(array)).to(_device(device))


def colormap_lut(colormap: Colormap | str = "jet", device: torch.device | str = "cpu") -> Tensor:
    """The 256-entry lookup table of a matplotlib colormap on ``device`` (cached per name and device).

    Args:
        colormap: a matplotlib colormap or its registered name.
        device: where the table lives.

    Returns:
        ``(256, 3)`` uint8 table: entry ``k`` is ``cmap(k / 255, bytes=True)[:3]``.

    Raises:
        TypeError: ``colormap`` is neither a string nor a ``Colormap``.
        ValueError: an unknown colormap name.

    """
    return _table("lut", colormap, 0.0, device)


def _check_overlay_inputs(images: Tensor, cams: Tensor, alpha: float) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``images`` is ``(N, 3, H, W)`` and ``cams`` ``(N, h, w)``."""
    if not isinstance(images, Tensor) or not isinstance(cams, Tensor):
        raise TypeError("`images` and `cams` must be tensors")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"`images` must be uint8 or floating point (in [0, 1]), got {images.dtype}")
    if cams.ndim != 3 or cams.shape[0] != images.shape[0] or 0 in cams.shape:
        raise ValueError(f"`cams` must be (N, h, w) with N = {images.shape[0]}, got {tuple(cams.shape)}")
    if not cams.is_floating_point():
        raise TypeError(f"`cams` must be floating point (in [0, 1]), got {cams.dtype}")
    if cams.device != images.device:
        raise ValueError(f"`images` ({images.device}) and `cams` ({cams.device}) must be on the same device")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")


@torch.no_grad()
def overlay(
    images: Tensor, cams: Tensor, colormap: Colormap | str = "jet", alpha: float = 0.5, backend: str = "auto"
) -> Tensor:
    """Blend colour-mapped CAMs over a batch of images on the tensors' device, in one fused pass.

    Spec, per pixel and channel ``c``: ``v`` is the 8-bit pixel (float images: ``floor(255 * clamp(x, 0, 1) + 0.5)``
    in fp32, fp64 for fp64 images), ``k = floor(up(255 * clamp(cam, 0, 1) + 0.5))`` the LUT index (``up``: bilinear
    resize to ``(H, W)`` with ``align_corners=False`` in fp32, the values of the compiled ``cam_step`` and, to
    rounding, of ``F.interpolate``), NaN pixels and map values count as 0, and
    ``out = floor(alpha * v + (1 - alpha) * lut[k, c] + 0.5)`` with ``lut`` the 256-entry table of
    :func:`colormap_lut`. The blend is a lookup in a cached ``(3, 256 * 256)`` table. The compiled backends
    (``cpp``, ``cuda``) do everything in one kernel (one read of the images, one uint8 write) and equal the ``torch``
    reference (:func:`pycam_fast.ops.reference.overlay`) bit for bit. Unlike :func:`overlay_mask`, the map is neither
    squared nor bicubic-resized.

    Args:
        images: ``(N, 3, H, W)`` uint8, or float in ``[0, 1]`` (values outside are clamped).
        cams: ``(N, h, w)`` float maps in ``[0, 1]`` (values outside are clamped), on the same device.
        colormap: a matplotlib colormap or its name.
        alpha: weight of the image, in ``[0, 1]`` (1: the image only, 0: the heatmap only).
        backend: ``"auto"`` (the compiled op when the extension is built, else ``"torch"``) or a backend name.

    Returns:
        ``(N, 3, H, W)`` uint8 overlays on the images' device.

    Raises:
        TypeError: non-tensors, or an unsupported dtype or colormap type.
        ValueError: bad shapes, mismatched batch sizes or devices, ``alpha`` outside ``[0, 1]``, an unknown colormap,
            an unknown backend or one unavailable for the images' device.

    """
    _check_overlay_inputs(images, cams, alpha)
    table = _table("blend", colormap, float(alpha), images.device)
    return ops.overlay(images, cams, table, backend=backend)
