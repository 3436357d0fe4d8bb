"""Element-wise Grad-CAM variants: HiRes-CAM and Grad-CAM element-wise (pytorch-grad-cam's definitions).

Both keep the gradient at every position instead of averaging it per channel. HiRes-CAM passes the full-shape
gradients as the ``cam_step`` weights; the element-wise variant needs a ReLU after the product, so its
``relu(g * A)`` map is computed once and handed to ``cam_step`` with unit weights (see :class:`PrecomputedMaps`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..targets import ClassIdx
from .core import _CAM
from .gradient import _GradCAM

__all__ = ["GradCAMElementWise", "HiResCAM", "PrecomputedMaps"]


class PrecomputedMaps(_CAM):
    """Mixin for methods whose per-layer map is not ``sum_c(w * A)`` of the hooked activations.

    ``_get_weights`` stores ``(N, C', *S)`` maps with :meth:`_store_maps` and returns unit ``(1, C')`` weights; the
    shared ``cam_step`` then sums the channels, resizes, applies ReLU and normalises as for every other method.
    """

    _maps: list[Tensor] | None = None

    def _store_maps(self, maps: list[Tensor]) -> list[Tensor]:
        """Keep ``maps`` for :meth:`_cam_activations` and return their unit weights ``(1, C')``."""
        self._maps = maps
        return [m.new_ones(1, m.shape[1]) for m in maps]

    def _cam_activations(self) -> list[Tensor]:
        maps, self._maps = self._maps, None  # used once: nothing survives the call
        if maps is None:
            raise RuntimeError("the maps are computed by _get_weights, which must run first")
        return maps


class HiResCAM(_GradCAM):
    r"""HiRes-CAM ("Use HiResCAM instead of Grad-CAM", Draelos & Carin 2020).

    ``L = ReLU(sum_k g_k * A_k)``: the gradients ``(N, C, *S)`` are the element-wise weights.
    """

    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        return list(self._grads(class_idx, scores, **kwargs))


class GradCAMElementWise(PrecomputedMaps, _GradCAM):
    r"""Grad-CAM element-wise (pytorch-grad-cam): ``L = ReLU(sum_k ReLU(g_k * A_k))``."""

    def _get_weights(self, class_idx: ClassIdx | None, scores: Any = None, **kwargs: Any) -> list[Tensor]:
        grads = self._grads(class_idx, scores, **kwargs)
        return self._store_maps([torch.relu(g * a) for g, a in zip(grads, self.hook_a, strict=True)])
