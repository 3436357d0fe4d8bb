"""FEM, the Feature Explanation Method (Fuad et al. 2020), gradient-free, as pytorch-grad-cam defines it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..hooks import LayerSpec
from ..targets import ClassIdx, OutputTarget
from .core import _CAM

__all__ = ["FEM", "fem_weights"]


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


class FEM(_CAM):
    r"""FEM: ``w_k = mean_S[A_k > mean_S(A_k) + k std_S(A_k)]``, ``L = ReLU(sum_k w_k A_k)``.

    Class-agnostic: ``class_idx`` / ``targets`` are accepted and ignored, and no scores are needed.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        k: the threshold in standard deviations.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend`` (see :class:`_CAM`).

    Raises:
        ValueError: a non-finite or non-numeric ``k``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        k: float = 2.0,
        input_shape: tuple[int, ...] = (3, 224, 224),
        **kwargs: Any,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or k != k or abs(k) == float("inf"):
            raise ValueError(f"`k` must be a finite number of standard deviations, e.g. 2.0; got {k!r}")
        super().__init__(model, target_layer, input_shape, **kwargs)
        self.k = float(k)
        self._relu = True

    def _precheck(
        self, class_idx: ClassIdx | None, scores: Any = None, targets: OutputTarget | list[OutputTarget] | None = None
    ) -> None:
        self._check_activations()

    @torch.no_grad()
    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **_: Any) -> list[Tensor]:
        return [fem_weights(a, self.k) for a in self._check_activations()]

    def _extra_repr(self) -> str:
        return f"target_layer={self.target_names}, k={self.k}"
