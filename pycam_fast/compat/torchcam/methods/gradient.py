"""TorchCAM 0.5.0's ``torchcam.methods.gradient``: the gradient-based extractors, with TorchCAM's numbers.

``GradCAMpp`` and ``SmoothGradCAMpp`` reproduce the 0.5.0 code's quirks (see :mod:`pycam_fast.compat.torchcam`);
``RefineCAM`` defaults to that ``GradCAMpp``; the others are :mod:`pycam_fast.methods`' classes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .... import methods, ops
from ....methods.spec import CamTerms, GradMoments, LayerInputs

__all__ = ["FinerCAM", "GradCAM", "GradCAMpp", "LayerCAM", "LeGrad", "RefineCAM", "SmoothGradCAMpp", "XGradCAM"]

GradCAM = methods.GradCAM
XGradCAM = methods.XGradCAM
LayerCAM = methods.LayerCAM
LeGrad = methods.LeGrad


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
    """Smooth Grad-CAM++ as TorchCAM 0.5.0 computes it (see :mod:`pycam_fast.compat.torchcam` for the quirks)."""

    spec = replace(methods.SmoothGradCAMpp.spec, terms=_smooth_terms, summary="Smooth Grad-CAM++ (TorchCAM 0.5.0)")

    def _noisy_moments(self, *args: Any) -> list[GradMoments]:
        moments = super()._noisy_moments(*args)
        self.hook_a = [m.last_activations for m in moments]  # TorchCAM leaves the last noisy sample's hooked
        return moments


class RefineCAM(methods.RefineCAM):
    """RefineCAM with TorchCAM 0.5.0's default base method (its ``GradCAMpp``, quirk included)."""

    default_base = GradCAMpp


class FinerCAM(methods.FinerCAM):
    """Finer-CAM (TorchCAM 0.5.0): ``base_method`` is ``GradCAM``, ``GradCAMpp`` (this module's) or ``LayerCAM``."""
