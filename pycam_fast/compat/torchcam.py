"""TorchCAM 0.5.0's actual outputs, quirks included, for users who need identical numbers.

Differences from :mod:`pycam_fast.methods` (the documented formulas):

- ``GradCAMpp``: TorchCAM's alpha division is lost, so its weights are ``sum_S(g^2 * relu(g))``.
- ``SmoothGradCAMpp``: the alpha denominator uses ``sum_S(mean(g^3) * A)``; the ``relu(g)`` of the weights and the
  activations of the map are those of the LAST noisy sample.

Everything else (CAM, Grad-CAM, XGrad-CAM, Layer-CAM, Score-CAM, SS-CAM, IS-CAM, same noise draws for the same
seed) already matches and is shared.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .. import methods
from ..reference import DEFAULT_EPS
from ..targets import ClassIdx, OutputTarget

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "OutputTarget",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]

CAM = methods.CAM
GradCAM = methods.GradCAM
XGradCAM = methods.XGradCAM
LayerCAM = methods.LayerCAM
ScoreCAM = methods.ScoreCAM
SSCAM = methods.SSCAM
ISCAM = methods.ISCAM


class GradCAMpp(methods.GradCAMpp):
    """Grad-CAM++ as TorchCAM 0.5.0 computes it: ``w_k = sum_S(g^2 * relu(g))``."""

    def _get_weights(
        self, class_idx: ClassIdx | None, scores: Any = None, eps: float = DEFAULT_EPS, **kwargs: Any
    ) -> list[Tensor]:
        return [self._ops(g).gradcampp_weights_torchcam(g) for g in self._grads(class_idx, scores, **kwargs)]


class SmoothGradCAMpp(methods.SmoothGradCAMpp):
    """Smooth Grad-CAM++ as TorchCAM 0.5.0 computes it (see the module docstring for the quirks)."""

    def _smooth_weights(self, class_idx: ClassIdx | None, eps: float, **kwargs: Any) -> list[Tensor]:
        clean = list(self.hook_a)
        moments = self._noisy_moments(class_idx, **kwargs)
        n = self.num_samples
        weights = []
        for (_, s2, s3, last_g), a in zip(moments, clean, strict=True):
            g2, g3 = s2 / n, s3 / n
            denom = 2 * g2 + (g3 * a).flatten(2).sum(-1)[(...,) + (None,) * (a.ndim - 2)] + eps
            weights.append((g2 / denom * last_g.relu()).flatten(2).sum(-1))
        return weights
