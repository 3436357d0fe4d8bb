"""``pytorch_grad_cam.random_cam``: :class:`RandomCAM`, a sanity-check baseline with random channel weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor, nn

from .base_cam import BaseCAM

__all__ = ["RandomCAM"]


class RandomCAM(BaseCAM):
    """Random-weight CAM: ``w ~ U(-1, 1)`` per (sample, channel), drawn from NumPy's global generator.

    With the same ``np.random.seed`` it draws what pytorch-grad-cam 1.5.7 draws (one ``(N, C)`` array per layer, in
    layer order), so the maps match. The model still back-propagates, as in pytorch-grad-cam.
    """

    _generic = True

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform: Any = None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(
        self, input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> np.ndarray:
        """``(N, C)`` uniform draws in [-1, 1)."""
        return np.random.uniform(-1, 1, size=(grads.shape[0], grads.shape[1]))
