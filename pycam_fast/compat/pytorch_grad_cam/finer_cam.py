"""``pytorch_grad_cam.finer_cam``: :class:`FinerCAM` (a base method's map of a contrast with similar classes).

Finer-CAM ("Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation", Zhang et al. 2025) in
pytorch-grad-cam 1.5.7's form: with ``targets=None`` each sample's target is a
:class:`~.utils.model_targets.FinerWeightedTarget` of its main class (the highest score, or ``target_idx``'s closest
class) contrasted with the classes at positions ``comparison_categories`` of its classes sorted by
``|score - main score|`` (NumPy's ``argsort``, as pytorch-grad-cam: ties keep its order); the base method then
explains those targets. Explicit ``targets`` go to the base method unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor, nn

from ...targets import OutputTarget
from ._wrapper import HoldsHooks
from .cams import GradCAM
from .utils.model_targets import FinerWeightedTarget

__all__ = ["FinerCAM"]

#: pytorch-grad-cam's default positions (in the sorted-by-similarity classes) of the comparison classes.
DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)


def _finer_targets(
    outputs: np.ndarray, alpha: float, comparison_categories: Sequence[int] | None, target_idx: int | None
) -> list[FinerWeightedTarget]:
    """pytorch-grad-cam's automatic Finer-CAM targets, one per sample.

    Args:
        outputs: ``(N, K)`` model scores.
        alpha: the comparison strength of :class:`FinerWeightedTarget`.
        comparison_categories: positions in the sorted classes (position 0 is the main class); ``None``:
            ``(1, 2, 3)`` capped by ``K - 1``; positions ``>= K`` are dropped.
        target_idx: the class whose score the others are compared with (``None``: each sample's highest score).

    Returns:
        ``N`` targets ``FinerWeightedTarget(sorted[0], [sorted[p] for p in comparison_categories], alpha)``.

    """
    num_classes = outputs.shape[-1]
    if comparison_categories is None:
        positions = list(DEFAULT_COMPARISON_CATEGORIES[: max(num_classes - 1, 0)])
    else:
        positions = [p for p in comparison_categories if p < num_classes]
    reference = np.max(outputs, axis=-1) if target_idx is None else outputs[:, target_idx]
    order = np.argsort(np.abs(outputs - reference[:, None]), axis=-1)
    return [FinerWeightedTarget(int(row[0]), [int(row[p]) for p in positions], alpha) for row in order]


class _FinerRule:
    """A sample's automatic Finer-CAM target, chosen from the scores it is evaluated on: ``(K,) -> ()``."""

    def __init__(self, alpha: float, comparison_categories: Sequence[int] | None, target_idx: int | None) -> None:
        self.alpha, self.comparison_categories, self.target_idx = alpha, comparison_categories, target_idx

    def __call__(self, model_output: Tensor) -> Tensor:
        scores = model_output.detach().float().cpu().numpy()[None]
        (target,) = _finer_targets(scores, self.alpha, self.comparison_categories, self.target_idx)
        return target(model_output)


class FinerCAM(HoldsHooks):
    """pytorch-grad-cam's ``FinerCAM(model, target_layers, reshape_transform=None, base_method=GradCAM)``.

    Args:
        model: the model to explain.
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: passed to the base method.
        base_method: a :class:`~.base_cam.BaseCAM` class (called as ``base_method(model, target_layers,
            reshape_transform)``) explaining the Finer-CAM targets.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
        base_method: type = GradCAM,
    ) -> None:
        self.base_cam = base_method(model, target_layers, reshape_transform)
        self.compute_input_gradient = self.base_cam.compute_input_gradient
        self.uses_gradients = self.base_cam.uses_gradients

    def forward(
        self,
        input_tensor: Tensor,
        targets: list[OutputTarget] | None = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: list[int] | None = None,
        target_idx: int | None = None,
    ) -> np.ndarray:
        """The base method's maps of the Finer-CAM targets.

        Args:
            input_tensor: ``(N, C, H, W)`` batch.
            targets: one callable per sample, or ``None`` for the automatic :class:`FinerWeightedTarget` s.
            eigen_smooth: passed to the base method.
            alpha: the comparison strength.
            comparison_categories: positions of the comparison classes among the classes sorted by closeness to
                the main score (default ``[1, 2, 3]``).
            target_idx: the class to compare with (default: each sample's highest-scoring class).

        Returns:
            ``(N, H, W)`` float32 maps in [0, 1].

        """
        if targets is None:
            # pytorch-grad-cam runs a forward to pick each sample's classes, then the base method's forward; each
            # sample's target depends only on its own scores, so it is picked inside the base method's forward
            rule = _FinerRule(alpha, comparison_categories, target_idx)
            targets = [rule] * len(input_tensor)
        return self.base_cam(input_tensor, targets, eigen_smooth=eigen_smooth)

    _holders = ("base_cam",)
