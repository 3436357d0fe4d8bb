"""Output targets with pytorch-grad-cam's names and semantics: each is called on ONE sample's model output.

They work on any device (masks and boxes follow the output) and with batched ``(N, K)`` outputs where
pytorch-grad-cam's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
]


def _pick(values: Tensor, category: int) -> Tensor:
    """``values[category]`` for one sample ``(K,)``, ``values[:, category]`` for ``(N, K)``."""
    return values[category] if values.ndim == 1 else values[:, category]


class ClassifierOutputTarget:
    """The raw score (logit) of ``category``."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        """``(K,) -> ()`` or ``(N, K) -> (N,)``."""
        return _pick(model_output, self.category)


class ClassifierOutputSoftmaxTarget:
    """The softmax probability of ``category``."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        """``(K,) -> ()`` or ``(N, K) -> (N,)``."""
        return _pick(torch.softmax(model_output, dim=-1), self.category)


class ClassifierOutputReST:
    """Logit minus cross-entropy of ``category`` (ShapleyCAM's "ReST": pre- and post-softmax scores together).

    ``z_c - CE(z, c) = z_c + log softmax(z)_c``.
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        """``(K,) -> ()`` or ``(N, K) -> (N,)``."""
        log_probs = torch.log_softmax(model_output, dim=-1)
        return _pick(model_output, self.category) + _pick(log_probs, self.category)


class FinerWeightedTarget:
    """FinerCAM's target: ``sum_j p_j (z_main - alpha z_j) / (sum_j p_j + 1e-9)`` over the comparison classes ``j``.

    ``p_j`` is the softmax probability of comparison class ``j``, ``z`` the logits.

    Args:
        main_category: the class to explain.
        comparison_categories: the (similar) classes it is contrasted with.
        alpha: the comparison strength.

    """

    def __init__(self, main_category: int, comparison_categories: Sequence[int], alpha: float) -> None:
        self.main_category = main_category
        self.comparison_categories = comparison_categories
        self.alpha = alpha

    def __call__(self, model_output: Tensor) -> Tensor:
        """``(K,) -> ()`` or ``(..., K) -> (...)``."""
        main = model_output[..., self.main_category]
        probs = torch.softmax(model_output, dim=-1)
        numerator: Any = 0
        denominator: Any = 0
        for idx in self.comparison_categories:
            numerator = numerator + probs[..., idx] * (main - self.alpha * model_output[..., idx])
            denominator = denominator + probs[..., idx]
        return numerator / (denominator + 1e-9)


class BinaryClassifierOutputTarget:
    """A single-logit binary classifier: the output for ``category == 1``, its negation otherwise."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        """The signed output (same shape)."""
        return model_output if self.category == 1 else -model_output


class SoftmaxOutputTarget:
    """All softmax probabilities (their sum is what gets explained)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        """``softmax(model_output, -1)``."""
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """All raw scores (their sum is what gets explained)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        """``model_output`` unchanged."""
        return model_output


class SemanticSegmentationTarget:
    """Sum of ``category``'s scores over the pixels of a mask.

    Args:
        category: the class channel of a ``(K, H, W)`` segmentation output.
        mask: ``(H, W)`` numpy array or tensor (binary or weights).

    """

    def __init__(self, category: int, mask: np.ndarray | Tensor) -> None:
        self.category = category
        self.mask = torch.as_tensor(mask)

    def __call__(self, model_output: Tensor) -> Tensor:
        """``(K, H, W) -> ()``."""
        return (model_output[self.category, :, :] * self.mask.to(model_output.device)).sum()


class FasterRCNNBoxScoreTarget:
    """Detection target: for each reference box, IoU + score of the best-overlapping detection of the same label.

    A reference box whose best detection has IoU ``<= iou_threshold`` or another label adds 0.

    Args:
        labels: the reference labels.
        bounding_boxes: the reference boxes ``(B, 4)`` (x1, y1, x2, y2).
        iou_threshold: minimum IoU for a match.

    """

    def __init__(self, labels: Sequence[int], bounding_boxes: Any, iou_threshold: float = 0.5) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: dict[str, Tensor]) -> Tensor:
        """One image's detections ``{"boxes", "labels", "scores"}`` -> ``(1,)`` score."""
        from torchvision.ops import box_iou

        boxes = model_outputs["boxes"]
        output = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0:
            return output
        for box, label in zip(self.bounding_boxes, self.labels, strict=False):
            ref = torch.as_tensor(box, device=boxes.device, dtype=boxes.dtype).reshape(1, 4)
            ious = box_iou(ref, boxes)[0]
            best = ious.argmax()
            if ious[best] > self.iou_threshold and model_outputs["labels"][best] == label:
                output = output + ious[best] + model_outputs["scores"][best]
        return output
