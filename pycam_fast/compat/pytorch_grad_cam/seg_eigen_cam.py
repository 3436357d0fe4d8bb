"""``pytorch_grad_cam.seg_eigen_cam``: :class:`SegEigenCAM` (Eigen-CAM of ``|g| * A`` with a sign correction)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ...methods.eigencam import principal_projection
from .base_cam import RecordsMapCAM

__all__ = ["SegEigenCAM"]


class SegEigenCAM(RecordsMapCAM):
    """Seg-Eigen-CAM: first principal component of ``|g| * A``, flipped where ``|min| > |max|``.

    The sign correction makes the map independent of the singular vectors' sign, so the factorisation runs in
    torch on the device (a batched ``eigh`` of the smaller Gram matrix). ``eigen_smooth`` is ignored, as in
    pytorch-grad-cam.
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform: Any = None) -> None:
        super().__init__(model, target_layers, reshape_transform, uses_gradients=True)

    def _records_map(self, activations: Tensor, grads: Tensor | None, eigen_smooth: bool) -> Tensor:
        return principal_projection(grads.abs() * activations, sign="max")
