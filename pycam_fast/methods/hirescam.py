"""HiRes-CAM ("Use HiResCAM instead of Grad-CAM", Draelos & Carin 2020)."""

from __future__ import annotations

from .extractor import CAMExtractor
from .spec import CamTerms, LayerInputs, define_method

__all__ = ["HIRESCAM", "HiResCAM"]


def _terms(layer: LayerInputs) -> CamTerms:
    return CamTerms(layer.grads, layer.activations)  # type: ignore[arg-type]


HIRESCAM = define_method("HiResCAM", "gradient", _terms, "L = ReLU(sum_k g_k * A_k)")


class HiResCAM(CAMExtractor):
    r"""HiRes-CAM: ``L = ReLU(sum_k g_k * A_k)``: the gradients ``(N, C, *S)`` are element-wise weights."""

    spec = HIRESCAM
