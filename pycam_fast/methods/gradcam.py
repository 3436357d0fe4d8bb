"""Grad-CAM ("Grad-CAM: Visual Explanations from Deep Networks", Selvaraju et al. 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from .extractor import CAMExtractor
from .spec import LayerInputs, define_method, weighted_activations

__all__ = ["GRADCAM", "GradCAM", "filter_gradients"]


def filter_gradients(grads: Tensor, activations: Tensor, gradient_filter: str | None) -> Tensor:
    """Xplique's positive-gradient variants of the weights' gradients.

    Args:
        grads: ``(N, C, *S)`` gradients ``g``.
        activations: ``(N, C, *S)`` activations ``A``.
        gradient_filter: ``None`` (``g``), ``"guided"`` (Guided-ReLU: ``g * [g > 0] * [A > 0]``) or ``"deconv"``
            (Deconv-ReLU: ``relu(g)``).

    Returns:
        the filtered ``(N, C, *S)`` gradients.

    """
    if gradient_filter == "deconv":
        return torch.relu(grads)
    if gradient_filter == "guided":
        return torch.where((grads > 0) & (activations > 0), grads, torch.zeros_like(grads))
    return grads


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    grads = filter_gradients(layer.grads, layer.activations, layer.options["gradient_filter"])  # type: ignore[arg-type]
    return ops.gradcam_weights(grads, backend=layer.backend)


GRADCAM = define_method(
    "GradCAM", "gradient", _terms, "w_k = mean_S(dY/dA_k); L = ReLU(sum_k w_k A_k)", options={"gradient_filter": None}
)


class GradCAM(CAMExtractor):
    r"""Grad-CAM: ``w_k = mean_{i,j} dY/dA_k(i, j)``, ``L = ReLU(sum_k w_k A_k)``.

    ``gradient_filter`` selects Xplique's positive-gradient weights (see :func:`filter_gradients`): ``"guided"`` or
    ``"deconv"``. Arguments as :class:`~.extractor.CAMExtractor`.
    """

    spec = GRADCAM
