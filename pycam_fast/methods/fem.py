"""FEM, the Feature Explanation Method (Fuad et al. 2020), gradient-free, as pytorch-grad-cam defines it."""

from __future__ import annotations

import torch
from torch import Tensor

from .extractor import CAMExtractor
from .spec import CamTerms, LayerInputs, define_method

__all__ = ["FEM", "FEM_SPEC", "fem_weights"]


def fem_weights(activations: Tensor, k: float = 2.0) -> Tensor:
    """FEM channel weights: the fraction of positions where ``A_k > mean_S(A_k) + k * std_S(A_k)``.

    Args:
        activations: ``(N, C, *S)``.
        k: number of (population) standard deviations above the mean.

    Returns:
        ``(N, C)`` weights in [0, 1], in the activations' dtype.

    """
    flat = activations.flatten(2)
    std, mean = torch.std_mean(flat, dim=-1, correction=0, keepdim=True)
    return (flat > mean + k * std).to(activations.dtype).mean(-1)


def _terms(layer: LayerInputs) -> CamTerms:
    return CamTerms(fem_weights(layer.activations, layer.options["k"]), layer.activations)


FEM_SPEC = define_method(
    "FEM",
    "activation",
    _terms,
    "w_k = mean_S[A_k > mean_S(A_k) + k std_S(A_k)]; L = ReLU(sum_k w_k A_k)",
    options={"k": 2.0},
    class_agnostic=True,
)


class FEM(CAMExtractor):
    r"""FEM: ``w_k = mean_S[A_k > mean_S(A_k) + k std_S(A_k)]``, ``L = ReLU(sum_k w_k A_k)``.

    Class-agnostic: ``class_idx`` / ``targets`` are accepted and ignored, and no scores are needed.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        k: the threshold in standard deviations.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``.

    Raises:
        ValueError: a non-finite or non-numeric ``k``.

    """

    spec = FEM_SPEC
    positional_arguments = ("k", "input_shape")
