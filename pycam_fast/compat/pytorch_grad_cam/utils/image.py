"""Image helpers with pytorch-grad-cam's names and outputs (NumPy / OpenCV, for display only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["deprocess_image", "preprocess_image", "show_cam_on_image"]


def preprocess_image(
    img: np.ndarray, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)
) -> Tensor:
    """``(H, W, C)`` image (uint8 0-255 or float in [0, 1]) -> normalised ``(1, C, H, W)`` float32 tensor.

    Like torchvision's ``ToTensor`` + ``Normalize``: uint8 images are divided by 255, float ones kept as they are.

    Raises:
        ValueError: not an ``(H, W)`` or ``(H, W, C)`` array.

    """
    array = np.asarray(img)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"`img` must be an (H, W, C) array, got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    tensor = tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Standardise, scale to 0.1 std around 0.5, clip to [0, 1] and convert to uint8 (for gradient images)."""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = np.clip(img * 0.1 + 0.5, 0, 1)
    return np.uint8(img * 255)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int | None = None,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay a CAM as an OpenCV heatmap: ``image_weight * img + (1 - image_weight) * heatmap``, rescaled to max 1.

    Args:
        img: ``(H, W, 3)`` float image in [0, 1] (RGB if ``use_rgb``, else BGR).
        mask: ``(H, W)`` map in [0, 1].
        use_rgb: return RGB instead of OpenCV's BGR.
        colormap: OpenCV colormap (default ``cv2.COLORMAP_JET``).
        image_weight: weight of the image, in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 overlay.

    Raises:
        ValueError: an image with values above 1, or ``image_weight`` outside [0, 1].

    """
    import cv2

    if np.max(img) > 1:
        raise ValueError("`img` must be a float32 image in [0, 1] (divide a uint8 image by 255)")
    if not 0 <= image_weight <= 1:
        raise ValueError(f"`image_weight` must be in [0, 1], got {image_weight}")
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET if colormap is None else colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    cam = (1 - image_weight) * (np.float32(heatmap) / 255) + image_weight * img
    return np.uint8(255 * (cam / np.max(cam)))
