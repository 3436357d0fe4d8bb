"""Layer-CAM ("LayerCAM: Exploring Hierarchical Class Activation Maps", Jiang et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from .extractor import CAMExtractor
from .spec import CamTerms, LayerInputs, define_method

__all__ = ["LAYERCAM", "LayerCAM"]


def _terms(layer: LayerInputs) -> CamTerms:
    return CamTerms(torch.relu(layer.grads), layer.activations)  # type: ignore[arg-type]


LAYERCAM = define_method("LayerCAM", "gradient", _terms, "L = ReLU(sum_k ReLU(g_k) * A_k)")


class LayerCAM(CAMExtractor):
    r"""Layer-CAM: ``L = ReLU(sum_k ReLU(g_k) * A_k)`` (element-wise weights); ``fuse_cams`` scales by ``tanh(2 L)``."""

    spec = LAYERCAM

    @staticmethod
    def _scale_cams(cams: list[Tensor], gamma: float = 2.0) -> list[Tensor]:
        return [torch.tanh(gamma * cam) for cam in cams]
