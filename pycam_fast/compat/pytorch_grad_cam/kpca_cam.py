"""``pytorch_grad_cam.kpca_cam``: :class:`KPCA_CAM`, Eigen-CAM with kernel PCA, batched in torch on the device."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base_cam import RecordsMapCAM
from .utils.svd_on_activations import kernel_projection

__all__ = ["KPCA_CAM"]

#: the kernels :func:`.utils.svd_on_activations.kernel_projection` computes
_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


class KPCA_CAM(RecordsMapCAM):  # noqa: N801 (pytorch-grad-cam's name)
    """KPCA-CAM: each image's activations projected on their first kernel principal component (gradient-free).

    One batched ``eigh`` of the ``(N, P, P)`` centred kernel matrices on the device, in place of scikit-learn's
    per-image ``KernelPCA`` (same values and sign; see :func:`.utils.svd_on_activations.kernel_projection`).
    ``eigen_smooth`` is ignored, as in pytorch-grad-cam.

    Args:
        model: the model to explain.
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: applied to the hooked activations.
        kernel: ``"sigmoid"`` (default), ``"rbf"``, ``"poly"``, ``"linear"`` or ``"cosine"``.
        gamma: the kernel coefficient (default ``1 / C``).

    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Any = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
    ) -> None:
        if kernel not in _KERNELS:
            raise ValueError(f"`kernel` must be one of {_KERNELS}, got {kernel!r}")
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0):
            raise ValueError(f"`gamma` must be a positive number or None, got {gamma!r}")
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.kernel = kernel
        self.gamma = gamma

    def _records_map(self, activations: Tensor, grads: Tensor | None, eigen_smooth: bool) -> Tensor:
        return kernel_projection(activations, self.kernel, self.gamma)
