"""Grad-CAM++ ("Grad-CAM++: Improved Visual Explanations", Chattopadhyay et al. 2018), as the paper defines it."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .. import ops
from .extractor import CAMExtractor
from .spec import LayerInputs, MethodSpec, define_method, weighted_activations

__all__ = ["GRADCAMPP", "GradCAMpp", "define_eps_weight_method"]


def define_eps_weight_method(name: str, weights: Callable[..., Tensor], summary: str) -> MethodSpec:
    """Define and register a gradient method whose channel weights are ``weights(g, A, eps, backend=...)``.

    Args:
        name: the method's class name.
        weights: an op ``(grads, activations, eps, *, backend) -> (N, C)`` (``ops.gradcampp_weights``,
            ``ops.xgradcam_weights``).
        summary: the formula in one line.

    Returns:
        the registered spec, with the option ``eps`` (default ``ops.DEFAULT_EPS``).

    """

    @weighted_activations
    def terms(layer: LayerInputs) -> Tensor:
        return weights(layer.grads, layer.activations, layer.options["eps"], backend=layer.backend)

    return define_method(name, "gradient", terms, summary, options={"eps": ops.DEFAULT_EPS})


GRADCAMPP = define_eps_weight_method(
    "GradCAMpp",
    ops.gradcampp_weights,
    "alpha = g^2 / (2 g^2 + sum_S(A) g^3 + eps); w_k = sum_S(alpha relu(g)); L = ReLU(sum_k w_k A_k)",
)


class GradCAMpp(CAMExtractor):
    r"""Grad-CAM++, as documented (TorchCAM 0.5.0's code loses its alpha: see :mod:`pycam_fast.compat.torchcam`).

    ``alpha = g^2 / (2 g^2 + sum_{a,b} A_k(a, b) g^3 + eps)`` where ``g != 0`` (else 0),
    ``w_k = sum_{i,j} alpha_k(i, j) ReLU(g_k(i, j))``, ``L = ReLU(sum_k w_k A_k)``.
    """

    spec = GRADCAMPP
