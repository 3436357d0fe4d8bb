"""grad-cam 1.5.7's ``pytorch_grad_cam.metrics.cam_mult_image``: the confidence change of ``input * CAM``.

The products of the whole batch are formed on its device and scored in one chunked inference forward together with
the unperturbed batch (see :mod:`.perturbation_confidence`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .perturbation_confidence import PerturbationConfidenceMetric

__all__ = ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence", "multiply_tensor_with_cam"]


def multiply_tensor_with_cam(input_tensor: Tensor, cam: Tensor) -> Tensor:
    """``input_tensor * cam``: a ``(C, H, W)`` input weighted by its ``(H, W)`` CAM (broadcast over channels)."""
    return input_tensor * cam


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """The target score of ``input * CAM`` minus that of the input (``(N,)`` float32)."""

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)

    def _batched(self, input_tensor: Tensor, cams: np.ndarray) -> Tensor | None:
        if self.perturbation is not multiply_tensor_with_cam:
            return super()._batched(input_tensor, cams)
        weights = torch.from_numpy(cams[: input_tensor.shape[0]]).to(input_tensor.device)
        return input_tensor * weights.unsqueeze(1)


def _map_scores(result: Any, fn: Any) -> Any:
    """``fn`` applied to the scores of a metric result (``scores`` or ``(scores, visualization)``)."""
    return (fn(result[0]), result[1]) if isinstance(result, tuple) else fn(result)


class DropInConfidence(CamMultImageConfidenceChange):
    """The drop in confidence ``max(0, score(input) - score(input * CAM))`` (``(N,)`` float32)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As :class:`CamMultImageConfidenceChange` (with ``return_visualization``, the scores come first)."""
        return _map_scores(super().__call__(*args, **kwargs), lambda s: np.maximum(-s, 0))


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """Whether the confidence increased: ``1.0`` where ``score(input * CAM) > score(input)`` (``(N,)`` float32)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As :class:`CamMultImageConfidenceChange` (with ``return_visualization``, the scores come first)."""
        return _map_scores(super().__call__(*args, **kwargs), lambda s: np.float32(s > 0))
