"""``pytorch_grad_cam.sobel_cam``: an edge-map baseline (no model) to compare CAMs against."""

from __future__ import annotations

import numpy as np

__all__ = ["sobel_cam"]


def sobel_cam(img: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB image -> ``(H, W)`` uint8 edge map: mean of ``|d/dx|`` and ``|d/dy|`` of 3x3 Sobel filters.

    Computed with OpenCV on the grayscale image (each absolute derivative saturated to uint8 before averaging).
    """
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    dx = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3))
    dy = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3))
    return cv2.addWeighted(dx, 0.5, dy, 0.5, 0)
