"""grad-cam 1.5.7's ``pytorch_grad_cam.metrics.arcc``: Complexity, Coherency and their ARCC mean with ROAD.

Same classes, signatures and numbers as grad-cam; the ROAD part is this package's batched :class:`.road.ROADCombined`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .road import ROADCombined

__all__ = ["ARCC", "Coherency", "Complexity", "batch_pearson_coherency"]


def batch_pearson_coherency(A: np.ndarray, B: np.ndarray) -> np.ndarray:  # noqa: N803 (grad-cam's names)
    """Pearson correlation of each pair of samples: ``(N, ...)`` and ``(N, ...)`` arrays -> ``(N,)``.

    ``cov / (std_a * std_b + 1e-8)`` with the unbiased (``n - 1``) covariance and standard deviations.
    """
    a, b = A.reshape(A.shape[0], -1), B.reshape(B.shape[0], -1)
    da = a - a.mean(axis=1, keepdims=True)
    db = b - b.mean(axis=1, keepdims=True)
    dof = a.shape[1] - 1
    covariance = (da * db).sum(axis=1) / dof
    spread = np.sqrt((da**2).sum(axis=1) / dof) * np.sqrt((db**2).sum(axis=1) / dof)
    return covariance / (spread + 1e-8)


class Complexity:
    """The mean absolute value of each map: ``(N, H, W)`` -> ``(N,)`` (0: all zeros, 1: all ones)."""

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """``(N, ...)`` maps -> ``(N,)`` L1 norms divided by the number of pixels."""
        flat = grayscale_cams.reshape(grayscale_cams.shape[0], -1)
        return np.abs(flat).sum(axis=1) / flat.shape[1]


class Coherency:
    """``(1 + Pearson(CAM of input * CAM, CAM)) / 2`` per sample, with the given CAM method."""

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: list[Callable[[Any], Tensor]],
        model: nn.Module,
        base_method: Any,
    ) -> np.ndarray:
        """``(N,)`` coherency of ``(N, H, W)`` maps computed by ``base_method`` for ``(N, C, H, W)`` inputs."""
        weights = torch.from_numpy(grayscale_cams).unsqueeze(1).to(input_tensor.device)
        remapped = base_method(input_tensor=input_tensor * weights, targets=targets)
        return (batch_pearson_coherency(remapped, grayscale_cams) + 1) / 2


class ARCC:
    """The harmonic mean of Coherency, ``1 - Complexity`` and ``clip(2 * ROADCombined, 0, 1)``.

    Args:
        base_method: the CAM method (a ``BaseCAM``) whose maps are evaluated (used by Coherency).
        road_percentiles: the percentiles of the ROAD part.

    """

    def __init__(self, base_method: Any, road_percentiles: list[float] = [20, 40, 60, 80]) -> None:  # noqa: B006
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=road_percentiles)
        self.base_method = base_method

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: list[Callable[[Any], Tensor]],
        model: nn.Module,
    ) -> np.ndarray:
        """``(N,)`` ARCC scores of ``(N, H, W)`` maps (Complexity, Coherency, then ROAD, as grad-cam)."""
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road = np.clip(self.road(input_tensor, grayscale_cams, targets, model) * 2, 0, 1)
        inverse = 1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8)
        return 3 * inverse ** (-1)
