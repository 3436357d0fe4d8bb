"""Finer-CAM ("Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation", Zhang et al. 2025).

The base gradient method explains the contrastive score ``y_c - gamma * mean_t y_{d_t}`` instead of ``y_c``: the
comparison classes ``d_t`` are given (``comparison_idx``) or are the ``num_references`` classes whose scores are
closest to the target's. As TorchCAM 0.5.0: the contrast is built before the base method's ReLU (one backward of the
contrastive score; its gradient is ``g_c - gamma * mean_t g_{d_t}``), and ties between equally close classes go to
``torch.topk``'s order.
"""

from __future__ import annotations

from collections.abc import Callable
from math import isfinite
from typing import Any

import torch
from torch import Tensor, nn

from ..targets import ClassIdx
from .extractor import CAMExtractor
from .gradcam import GradCAM
from .wrapped import WrappedExtractor

__all__ = ["FinerCAM", "contrastive_scores"]

Comparison = int | list[int] | list[list[int]]


def _targets(class_idx: Any, scores: Tensor) -> list[int]:
    batch, num_classes = scores.shape
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        rows = [class_idx] * batch
    elif isinstance(class_idx, list):
        if len(class_idx) != batch:
            raise ValueError("expected batch size and length of `class_idx` to be the same")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in class_idx):
            raise TypeError("class_idx must contain integers")
        rows = class_idx
    else:
        raise TypeError("class_idx must be an integer or a list of integers")
    if any(i < 0 or i >= num_classes for i in rows):
        raise ValueError("class_idx contains an out-of-range index")
    return rows


def _explicit_rows(comparison_idx: Any, batch: int) -> list[list[int]]:
    if isinstance(comparison_idx, int) and not isinstance(comparison_idx, bool):
        return [[comparison_idx]] * batch
    if not isinstance(comparison_idx, list):
        raise TypeError("comparison_idx must be an integer, a list, or a nested list")
    if not comparison_idx:
        raise ValueError("comparison_idx cannot be empty")
    if all(isinstance(row, list) for row in comparison_idx):
        if len(comparison_idx) != batch:
            raise ValueError("per-sample comparison_idx must match the batch size")
        if any(not row for row in comparison_idx):
            raise ValueError("comparison_idx rows cannot be empty")
        if len({len(row) for row in comparison_idx}) != 1:
            raise ValueError("per-sample comparison_idx rows must have equal lengths")
        return comparison_idx
    if all(isinstance(i, int) and not isinstance(i, bool) for i in comparison_idx):
        return [comparison_idx] * batch
    raise TypeError("comparison_idx must contain integers or lists of integers")


def _references(comparison_idx: Any, scores: Tensor, rows: list[int], index: Tensor, count: int) -> Tensor:
    """``(N, T)`` comparison classes: given, or the ``count`` classes whose scores are closest to the target's."""
    batch, num_classes = scores.shape
    if comparison_idx is None:
        detached = scores.detach()
        distance = (detached - detached.gather(1, index)).abs().scatter_(1, index, float("inf"))
        return distance.topk(min(count, num_classes - 1), dim=1, largest=False).indices
    refs = _explicit_rows(comparison_idx, batch)
    for n, (target, row) in enumerate(zip(rows, refs, strict=True)):
        if any(isinstance(i, bool) or not isinstance(i, int) for i in row):
            raise TypeError("comparison_idx must contain integers")
        if any(i < 0 or i >= num_classes for i in row):
            raise ValueError(f"comparison_idx contains an out-of-range index for sample {n}")
        if len(set(row)) != len(row):
            raise ValueError(f"comparison_idx contains duplicates for sample {n}")
        if target in row:
            raise ValueError(f"comparison_idx contains the target class for sample {n}")
    return torch.tensor(refs, device=scores.device)


def contrastive_scores(
    scores: Any,
    class_idx: ClassIdx,
    comparison_idx: Comparison | None = None,
    gamma: float = 0.6,
    num_references: int = 3,
) -> Tensor:
    """``(N, 1)`` contrastive scores ``y_c - gamma * mean_t y_{d_t}`` (differentiable through ``scores``).

    Args:
        scores: ``(N, K)`` model output.
        class_idx: the target class (one int or N ints).
        comparison_idx: one class, a list for every sample, one list per sample, or ``None`` (automatic).
        gamma: weight of the mean comparison score.
        num_references: automatic comparisons per sample (capped by ``K - 1``).

    Raises:
        ValueError: missing or malformed scores, bad class or comparison indices.
        TypeError: indices or scores of the wrong type.

    """
    if scores is None:
        raise ValueError("model output scores is required to compute FinerCAM")
    if not isinstance(scores, Tensor):
        raise TypeError("scores must be a tensor")
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError("scores must have shape (batch_size, num_classes)")
    if scores.shape[1] < 2:
        raise ValueError("FinerCAM requires at least one comparison class")
    rows = _targets(class_idx, scores)
    index = torch.tensor(rows, device=scores.device).view(-1, 1)
    refs = _references(comparison_idx, scores, rows, index, num_references)
    return scores.gather(1, index) - gamma * scores.gather(1, refs).mean(dim=1, keepdim=True)


def _supported_bases() -> tuple[type[CAMExtractor], ...]:
    # imported here: importing them at module level would change the methods' registration order
    from .gradcampp import GradCAMpp
    from .layercam import LayerCAM

    return (GradCAM, GradCAMpp, LayerCAM)


class FinerCAM(WrappedExtractor):
    r"""Finer-CAM: the base method's map of ``y_c - gamma * mean_t y_{d_t}`` (contrast with similar classes).

    Args:
        model: the model to explain.
        target_layer: as :class:`~.extractor.CAMExtractor`.
        input_shape: one sample's input shape (passed to the base extractor).
        base_method: ``GradCAM``, ``GradCAMpp`` or ``LayerCAM`` (or a subclass).
        gamma: weight of the mean comparison score (finite, ``>= 0``).
        num_references: automatic comparison classes per sample (``>= 1``, capped by the classes available).
        base_kwargs: keyword arguments of ``base_method``.

    Raises:
        TypeError: another ``base_method``, or ``gamma``/``num_references`` of the wrong type.
        ValueError: a negative or non-finite ``gamma``, or ``num_references < 1``.

    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: Any = None,
        input_shape: tuple[int, ...] = (3, 224, 224),
        *,
        base_method: type[CAMExtractor] = GradCAM,
        gamma: float = 0.6,
        num_references: int = 3,
        **base_kwargs: Any,
    ) -> None:
        if not isinstance(base_method, type) or not issubclass(base_method, _supported_bases()):
            raise TypeError("base_method must be GradCAM, GradCAMpp, or LayerCAM")
        if isinstance(gamma, bool) or not isinstance(gamma, int | float):
            raise TypeError("gamma must be a real number")
        if not isfinite(gamma) or gamma < 0:
            raise ValueError("gamma must be finite and non-negative")
        if isinstance(num_references, bool) or not isinstance(num_references, int):
            raise TypeError("num_references must be an integer")
        if num_references < 1:
            raise ValueError("num_references must be positive")
        self.gamma = float(gamma)
        self.num_references = num_references
        super().__init__(base_method(model, target_layer, input_shape=input_shape, **base_kwargs))

    def _contrast(self, class_idx: Any, scores: Any, comparison_idx: Any, kwargs: dict[str, Any]) -> Tensor:
        if kwargs.get("targets") is not None:
            raise ValueError("FinerCAM does not support arbitrary output targets")
        kwargs.pop("targets", None)
        return contrastive_scores(scores, class_idx, comparison_idx, self.gamma, self.num_references)

    def _maps(
        self,
        base: Callable[..., list[Tensor]],
        class_idx: ClassIdx,
        scores: Tensor | None = None,
        comparison_idx: Comparison | None = None,
        normalized: bool = True,
        **kwargs: Any,
    ) -> list[Tensor]:
        """One ``(N, *S)`` map per target layer, of the contrastive score.

        Raises:
            ValueError: ``targets`` given (not supported), or bad scores / indices.

        """
        contrast = self._contrast(class_idx, scores, comparison_idx, kwargs)
        return base([0] * contrast.shape[0], contrast, normalized, **kwargs)

    def fuse_cams(self, cams: list[Tensor], target_shape: tuple[int, ...] | None = None) -> Tensor:
        """Fuse per-layer maps as the base method does."""
        return self.base_cam.fuse_cams(cams, target_shape)

    def __repr__(self) -> str:
        return (
            f"FinerCAM(base_method={type(self.base_cam).__name__}, target_layer={self.target_names}, "
            f"gamma={self.gamma}, num_references={self.num_references})"
        )
