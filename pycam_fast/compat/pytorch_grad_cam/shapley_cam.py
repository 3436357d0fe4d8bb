"""``pytorch_grad_cam.shapley_cam``: :class:`ShapleyCAM` (gradient and Hessian-vector product weights)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .base_cam import RecordsMapCAM, weighted_map

__all__ = ["ShapleyCAM"]


class ShapleyCAM(RecordsMapCAM):
    """ShapleyCAM: ``w = mean_S(g - H A / 2)``, ``H A`` the Hessian-vector product of the target with the activations.

    One backward of the model tail with ``create_graph=True`` gives ``g``; one double-backward per layer gives ``H A``
    (``d(g . A)/dA`` with ``A`` held as the vector), everything in torch on the device. Pair it with
    :class:`~.utils.model_targets.ClassifierOutputReST` for the paper's target (a plain logit is piecewise linear in
    a ReLU network, where ``H A`` vanishes and ShapleyCAM equals Grad-CAM). With a ``reshape_transform`` the
    transform is applied to ``A``, ``g`` and ``H A`` before weighting (pytorch-grad-cam 1.5.7 fails there).
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform: Any = None) -> None:
        super().__init__(
            model, target_layers, reshape_transform, compute_input_gradient=True, uses_gradients=True, detach=False
        )

    def _generic_records_unavailable(self) -> str | None:
        # the input gradient and the kept graph serve only g and H A, which the tail's graph gives: a tail-only
        # forward with create_graph (the layers before the target run without recording)
        return self._tail_only_unavailable()

    def _backward(self, loss: Tensor, leaf: Tensor | None) -> None:
        # pytorch-grad-cam differentiates w.r.t. the input only to build the graph of g (autograd.grad leaves
        # input.grad unset): the hooked outputs suffice, so only the model tail is back-propagated
        super()._backward(loss, None)

    def _weights_and_activations(
        self, activations: Tensor, grads: Tensor, host_mean: bool = False
    ) -> tuple[Tensor, Tensor]:
        hvp = None
        if grads.requires_grad:  # else g does not depend on A (a linear head on a frozen copy): H A = 0
            (hvp,) = torch.autograd.grad(
                grads, activations, grad_outputs=activations, retain_graph=True, allow_unused=True
            )
        if hvp is None:
            hvp = torch.zeros_like(activations)
        transform = self.reshape_transform
        if transform is not None:
            hvp, activations, grads = transform(hvp), transform(activations), transform(grads)
        if activations.ndim not in (4, 5):
            raise ValueError(
                f"ShapleyCAM needs (N, C, *S) activations with 2 or 3 spatial dims, got {activations.ndim}"
            )
        shifted = (grads - 0.5 * hvp).detach()
        if host_mean:  # NumPy's float32 reduction, bit for bit (eigen_smooth: the component's sign depends on it)
            mean = np.mean(shifted.cpu().numpy(), axis=tuple(range(2, shifted.ndim)))
            return torch.from_numpy(mean).to(shifted.device), activations.detach()
        return shifted.flatten(2).mean(dim=2), activations.detach()

    def get_cam_weights(
        self, input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> Tensor:
        """``(N, C)`` weights from the graph-connected activations and gradients."""
        return self._weights_and_activations(activations, grads)[0]

    def _records_map(self, activations: Tensor, grads: Tensor | None, eigen_smooth: bool) -> Tensor:
        weights, acts = self._weights_and_activations(activations, grads, host_mean=eigen_smooth)
        return weighted_map(weights, acts, eigen_smooth)
