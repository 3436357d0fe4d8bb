"""XGrad-CAM ("Axiom-based Grad-CAM", Fu et al. 2020)."""

from __future__ import annotations

from .. import ops
from .extractor import CAMExtractor
from .gradcampp import define_eps_weight_method

__all__ = ["XGRADCAM", "XGradCAM"]


XGRADCAM = define_eps_weight_method(
    "XGradCAM", ops.xgradcam_weights, "w_k = sum_S(g A_k) / (sum_S(A_k) + eps); L = ReLU(sum_k w_k A_k)"
)


class XGradCAM(CAMExtractor):
    r"""XGrad-CAM: ``w_k = sum_ij g_k(i, j) A_k(i, j) / (sum_ij A_k(i, j) + eps)``, ``L = ReLU(sum_k w_k A_k)``."""

    spec = XGRADCAM
