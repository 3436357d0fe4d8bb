"""Grad-CAM++ ("Grad-CAM++: Improved Visual Explanations", Chattopadhyay et al. 2018), as the paper defines it."""

from __future__ import annotations

from torch import Tensor

from .. import ops
from .extractor import CAMExtractor
from .spec import LayerInputs, MethodSpec, register_method, weighted_activations

__all__ = ["GRADCAMPP", "GradCAMpp"]


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    return ops.gradcampp_weights(layer.grads, layer.activations, layer.options["eps"], backend=layer.backend)  # type: ignore[arg-type]


GRADCAMPP = register_method(
    MethodSpec(
        name="GradCAMpp",
        kind="gradient",
        terms=_terms,
        summary="alpha = g^2 / (2 g^2 + sum_S(A) g^3 + eps); w_k = sum_S(alpha relu(g)); L = ReLU(sum_k w_k A_k)",
        options={"eps": ops.DEFAULT_EPS},
    )
)


class GradCAMpp(CAMExtractor):
    r"""Grad-CAM++, as documented (TorchCAM 0.5.0's code loses its alpha: see :mod:`pycam_fast.compat.torchcam`).

    ``alpha = g^2 / (2 g^2 + sum_{a,b} A_k(a, b) g^3 + eps)`` where ``g != 0`` (else 0),
    ``w_k = sum_{i,j} alpha_k(i, j) ReLU(g_k(i, j))``, ``L = ReLU(sum_k w_k A_k)``.
    """

    spec = GRADCAMPP
