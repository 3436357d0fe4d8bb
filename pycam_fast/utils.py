"""Visualisation helpers."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Colormap
from PIL import Image

__all__ = ["overlay_mask"]


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
