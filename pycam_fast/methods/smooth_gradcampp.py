"""Smooth Grad-CAM++ (Omeiza et al. 2019), as the paper defines it."""

from __future__ import annotations

from torch import Tensor

from .. import ops
from ..ops.reference import gradcampp_from_moments
from .extractor import CAMExtractor
from .spec import LayerInputs, define_method, weighted_activations

__all__ = ["SMOOTH_GRADCAMPP", "SmoothGradCAMpp"]


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    m = layer.moments
    return gradcampp_from_moments(m.mean, m.mean_sq, m.mean_cube, layer.activations, layer.options["eps"])  # type: ignore[union-attr]


SMOOTH_GRADCAMPP = define_method(
    "SmoothGradCAMpp",
    "gradient",
    _terms,
    "Grad-CAM++ with D1, D2, D3 = mean g, g^2, g^3 over noisy inputs x + N(0, std^2); map of the clean A",
    options={"num_samples": 4, "std": 0.3, "eps": ops.DEFAULT_EPS},
    smooth=True,
)


class SmoothGradCAMpp(CAMExtractor):
    r"""Smooth Grad-CAM++: Grad-CAM++ on derivatives averaged over noisy copies of the input.

    ``D1 = mean(g)``, ``D2 = mean(g^2)``, ``D3 = mean(g^3)`` over ``num_samples`` copies ``x + N(0, std^2)`` (drawn
    like TorchCAM); ``alpha = D2 / (2 D2 + sum_{a,b} A_k(a, b) D3 + eps)`` (0 where ``D2 == 0``),
    ``w_k = sum alpha ReLU(D1)``, and the map uses the clean input's activations ``A``.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        num_samples: number of noisy samples.
        std: standard deviation of the input noise.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``, ``eps``.

    Raises:
        ValueError: ``num_samples < 1`` or ``std < 0``.

    """

    spec = SMOOTH_GRADCAMPP
    positional_arguments = ("num_samples", "std", "input_shape")
