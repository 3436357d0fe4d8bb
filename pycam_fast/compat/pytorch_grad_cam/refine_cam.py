"""``pytorch_grad_cam.refine_cam``: :class:`RefineCAM` (the product of a base method's maps over several layers).

pytorch-grad-cam 1.5.7's form of RefineCAM ("How to Evaluate and Refine your CAM", 2026): one base CAM per target
layer, each giving ``(N, H, W)`` maps in [0, 1]; their element-wise product over the layers is min-max normalised
per image (:func:`~.utils.image.scale_cam_image`). As in pytorch-grad-cam, ``forward``'s ``eigen_smooth`` reaches
the base method as its third positional argument, ``aug_smooth`` (the same maps as pytorch-grad-cam's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor, nn

from ...targets import OutputTarget
from ._wrapper import HoldsHooks
from .base_cam import BaseCAM
from .cams import GradCAMPlusPlus
from .utils.image import scale_cam_image

__all__ = ["RefineCAM"]


class RefineCAM(HoldsHooks):
    """pytorch-grad-cam's ``RefineCAM(model, target_layers, reshape_transform=None, base_method=GradCAMPlusPlus)``.

    Args:
        model: the model to explain.
        target_layers: the layers whose maps are multiplied (one base CAM each).
        reshape_transform: passed to each base CAM.
        base_method: a :class:`~.base_cam.BaseCAM` class, called as ``base_method(model, [layer],
            reshape_transform, **kwargs)``.
        kwargs: further keyword arguments of ``base_method`` (e.g. ``compute_input_gradient``).

    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        base_method: type = GradCAMPlusPlus,
        **kwargs: Any,
    ) -> None:
        self.base_cam_per_layer = [base_method(model, [layer], reshape_transform, **kwargs) for layer in target_layers]
        # the same method on all the layers at once: one forward gives every layer's map (pytorch-grad-cam runs one
        # forward and backward per layer)
        self._joint = base_method(model, list(target_layers), reshape_transform, **kwargs) if target_layers else None

    _holders = ("base_cam_per_layer", "_joint")

    def forward(
        self, input_tensor: Tensor, targets: list[OutputTarget] | None = None, eigen_smooth: bool = False
    ) -> np.ndarray:
        """The refined maps.

        Args:
            input_tensor: ``(N, C, H, W)`` batch.
            targets: one callable per sample, or ``None`` for each sample's highest-scoring class.
            eigen_smooth: passed positionally to each base CAM, i.e. as its ``aug_smooth`` (pytorch-grad-cam's call).

        Returns:
            ``(N, H, W)`` float32 maps in [0, 1]: ``scale_cam_image(prod_l cam_l)``.

        """
        joint = None
        if not eigen_smooth and isinstance(self._joint, BaseCAM):
            joint = self._joint._per_layer_maps(input_tensor, targets)
        cams = joint or [base_cam(input_tensor, targets, eigen_smooth) for base_cam in self.base_cam_per_layer]
        return scale_cam_image(np.prod(np.array(cams), axis=0))
