"""Grad-CAM element-wise (pytorch-grad-cam's definition): the ReLU of each channel's product before the sum."""

from __future__ import annotations

import torch

from .extractor import CAMExtractor
from .spec import CamTerms, LayerInputs, define_method

__all__ = ["GRADCAM_ELEMENTWISE", "GradCAMElementWise"]


def _terms(layer: LayerInputs) -> CamTerms:
    maps = torch.relu(layer.grads * layer.activations)  # type: ignore[operator]
    return CamTerms(maps.new_ones(1, maps.shape[1]), maps)


GRADCAM_ELEMENTWISE = define_method("GradCAMElementWise", "gradient", _terms, "L = ReLU(sum_k ReLU(g_k * A_k))")


class GradCAMElementWise(CAMExtractor):
    r"""Grad-CAM element-wise: ``L = ReLU(sum_k ReLU(g_k * A_k))``."""

    spec = GRADCAM_ELEMENTWISE
