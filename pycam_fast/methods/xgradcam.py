"""XGrad-CAM ("Axiom-based Grad-CAM", Fu et al. 2020)."""

from __future__ import annotations

from torch import Tensor

from .. import ops
from .extractor import CAMExtractor
from .spec import LayerInputs, MethodSpec, register_method, weighted_activations

__all__ = ["XGRADCAM", "XGradCAM"]


@weighted_activations
def _terms(layer: LayerInputs) -> Tensor:
    return ops.xgradcam_weights(layer.grads, layer.activations, layer.options["eps"], backend=layer.backend)  # type: ignore[arg-type]


XGRADCAM = register_method(
    MethodSpec(
        name="XGradCAM",
        kind="gradient",
        terms=_terms,
        summary="w_k = sum_S(g A_k) / (sum_S(A_k) + eps); L = ReLU(sum_k w_k A_k)",
        options={"eps": ops.DEFAULT_EPS},
    )
)


class XGradCAM(CAMExtractor):
    r"""XGrad-CAM: ``w_k = sum_ij g_k(i, j) A_k(i, j) / (sum_ij A_k(i, j) + eps)``, ``L = ReLU(sum_k w_k A_k)``."""

    spec = XGRADCAM
