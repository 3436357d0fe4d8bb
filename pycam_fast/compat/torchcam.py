"""TorchCAM 0.5.0's actual outputs, quirks included, for users who need identical numbers.

Differences from :mod:`pycam_fast.methods` (the documented formulas):

- ``GradCAMpp``: TorchCAM's alpha division is lost, so its weights are ``sum_S(g^2 * relu(g))``.
- ``SmoothGradCAMpp``: the alpha denominator uses ``sum_S(mean(g^3) * A)``; the ``relu(g)`` of the weights and the
  activations of the map are those of the LAST noisy sample, which also stay hooked: a second call on the same
  forward takes them as its clean activations.

Everything else (CAM, Grad-CAM, XGrad-CAM, Layer-CAM, Score-CAM, SS-CAM, IS-CAM, same noise draws for the same
seed) already matches and is shared.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import methods, ops
from ..methods.spec import CamTerms, GradMoments, LayerInputs
from ..targets import OutputTarget

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


def _gradcampp_terms(layer: LayerInputs) -> CamTerms:
    return CamTerms(ops.gradcampp_weights_torchcam(layer.grads, backend=layer.backend), layer.activations)  # type: ignore[arg-type]


def _smooth_terms(layer: LayerInputs) -> CamTerms:
    m, acts = layer.moments, layer.activations
    act_term = (m.mean_cube * acts).flatten(2).sum(-1)[(...,) + (None,) * (acts.ndim - 2)]  # type: ignore[union-attr]
    alpha = m.mean_sq / (2 * m.mean_sq + act_term + layer.options["eps"])  # type: ignore[union-attr]
    weights = (alpha * m.last.relu()).flatten(2).sum(-1)  # type: ignore[union-attr]
    return CamTerms(weights, m.last_activations)  # type: ignore[union-attr, arg-type]


class GradCAMpp(methods.GradCAMpp):
    """Grad-CAM++ as TorchCAM 0.5.0 computes it: ``w_k = sum_S(g^2 * relu(g))``."""

    spec = replace(methods.GradCAMpp.spec, terms=_gradcampp_terms, summary="w_k = sum_S(g^2 relu(g)) (TorchCAM 0.5.0)")


class SmoothGradCAMpp(methods.SmoothGradCAMpp):
    """Smooth Grad-CAM++ as TorchCAM 0.5.0 computes it (see the module docstring for the quirks)."""

    spec = replace(methods.SmoothGradCAMpp.spec, terms=_smooth_terms, summary="Smooth Grad-CAM++ (TorchCAM 0.5.0)")

    def _noisy_moments(self, *args: Any) -> list[GradMoments]:
        moments = super()._noisy_moments(*args)
        self.hook_a = [m.last_activations for m in moments]  # TorchCAM leaves the last noisy sample's hooked
        return moments
