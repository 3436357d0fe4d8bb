"""pytorch-grad-cam 1.5.7's methods on :mod:`pycam_fast.methods` extractors (same names, same numbers)."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import methods
from ...ops.reference import spatial_minmax
from ...targets import ClassIdx, select_scores
from .base_cam import BaseCAM

__all__ = [
    "FEM",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
]

#: pytorch-grad-cam's per-channel mask normalisation epsilon in Score-CAM: ``(x - min) / (max - min + 1e-8)``.
_SCORE_EPS = 1e-8
#: batch size pytorch-grad-cam's Score-CAM uses when ``cam.batch_size`` is not set.
_SCORE_BATCH = 16


class GradCAM(BaseCAM):
    """Grad-CAM: ``w = mean_S(g)``."""

    extractor_cls = methods.GradCAM


class HiResCAM(BaseCAM):
    """HiRes-CAM: ``cam = sum_c(g * A)``."""

    extractor_cls = methods.HiResCAM


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise: ``cam = sum_c(relu(g * A))``."""

    extractor_cls = methods.GradCAMElementWise


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ with pytorch-grad-cam's epsilon (1e-6)."""

    extractor_cls = methods.GradCAMpp
    weight_kwargs: ClassVar[dict[str, Any]] = {"eps": 1e-6}


class XGradCAM(BaseCAM):
    """XGrad-CAM with pytorch-grad-cam's epsilon (1e-7)."""

    extractor_cls = methods.XGradCAM
    weight_kwargs: ClassVar[dict[str, Any]] = {"eps": 1e-7}


class LayerCAM(BaseCAM):
    """Layer-CAM: ``cam = sum_c(relu(g) * A)``."""

    extractor_cls = methods.LayerCAM


class EigenCAM(BaseCAM):
    """Eigen-CAM: first principal component of the activations, NumPy's singular-vector sign."""

    extractor_cls = partial(methods.EigenCAM, sign="numpy")  # type: ignore[assignment]
    uses_gradients = False
    supports_eigen_smooth = False
    optimized_copy = False  # the principal component amplifies rounding differences


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: first principal component of ``g * A``, NumPy's singular-vector sign."""

    extractor_cls = partial(methods.EigenGradCAM, sign="numpy")  # type: ignore[assignment]
    supports_eigen_smooth = False
    optimized_copy = False  # the principal component amplifies rounding differences


class FEM(BaseCAM):
    """FEM (gradient-free): ``w_k`` = fraction of positions above ``mean_k + k std_k``.

    Args:
        model: the model to explain.
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: applied to the hooked activations.
        k: the threshold in standard deviations.
        fast: allow the fast path (see :class:`BaseCAM`).

    """

    extractor_cls = methods.FEM
    uses_gradients = False
    supports_eigen_smooth = False
    optimized_copy = False  # a position at the threshold can flip with rounding

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Any = None,
        k: float = 2,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, fast=fast, k=k)

    @property
    def k(self) -> float:
        """The threshold in standard deviations."""
        return self._extractor.k


class _ScoreWeights(methods.ScoreCAM):
    """Score-CAM with pytorch-grad-cam's masks and chunking (its softmax weights are Score-CAM's).

    Each activation channel is first resized to the input with ``align_corners=True``, THEN min-max normalised
    (``eps=1e-8``); masked inputs are forwarded ``bs`` at a time (mixing samples), every channel included.
    """

    def _channel_scores(
        self, activations: list[Tensor], class_idx: ClassIdx | None, scores: Any, targets: Any, options: dict[str, Any]
    ) -> list[tuple[Tensor | None, Tensor | None]]:
        with self.scoring_forwards(targets, activations[0].shape[0]) as fns:
            return [(self._masked_scores(act, class_idx, fns), None) for act in activations]

    def _masked_chunk(self, act: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Masked inputs ``(stop - start, Cin, H, W)`` of flattened (sample, channel) pairs, and their samples."""
        maps = act.flatten(0, 1)[start:stop].unsqueeze(1)
        masks = F.interpolate(maps, size=self._input.shape[2:], mode="bilinear", align_corners=True)
        samples = torch.arange(start, stop, device=act.device) // act.shape[1]
        return spatial_minmax(masks, 2, _SCORE_EPS) * self._input[samples], samples

    def _masked_scores(self, act: Tensor, class_idx: ClassIdx | None, targets: Any) -> Tensor:
        if act.ndim != 4:
            raise ValueError(f"Score-CAM needs 2-D feature maps (N, C, h, w), got shape {tuple(act.shape)}")
        num_pairs = act.shape[0] * act.shape[1]
        chunks = []
        for start in range(0, num_pairs, self.bs):
            batch, samples = self._masked_chunk(act, start, min(start + self.bs, num_pairs))
            chunks.append(select_scores(self.model(batch), class_idx, targets, samples))
        return torch.cat(chunks).view(act.shape[:2])


class ScoreCAM(BaseCAM):
    """Score-CAM (gradient-free); ``cam.batch_size`` masked inputs per forward (default 16)."""

    extractor_cls = _ScoreWeights
    uses_gradients = False
    supports_fast_path = False  # its masked forwards run the user's model

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform: Any = None) -> None:
        super().__init__(model, target_layers, reshape_transform, batch_size=_SCORE_BATCH)

    @property
    def batch_size(self) -> int:
        """Masked inputs per forward."""
        return self._extractor.bs

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {value!r}")
        self._extractor.bs = value


class AblationCAM(BaseCAM):
    """Ablation-CAM: ``w_k = (y - y_k) / y`` with channel ``k`` ablated, evaluated on the model tail only.

    Built on :class:`pycam_fast.methods.AblationCAM`; ``cam.batch_size`` ablated copies per evaluation.

    Args:
        model: the model to explain.
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: not supported (must be ``None``).
        ablation_layer: pytorch-grad-cam's ablation layer; only its default behaviour (0 for ReLU-like activations,
            else a very negative value) is implemented, so anything but ``None`` is rejected.
        batch_size: ablated copies per evaluation.
        ratio_channels_to_ablate: only ``1.0`` (every channel) is supported.

    Raises:
        ValueError: ``reshape_transform``, a custom ``ablation_layer`` or ``ratio_channels_to_ablate != 1``.

    """

    extractor_cls = methods.AblationCAM
    uses_gradients = False
    supports_fast_path = False  # it evaluates the model's own tail

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Any = None,
        ablation_layer: nn.Module | None = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
    ) -> None:
        if reshape_transform is not None:
            raise ValueError("AblationCAM does not support `reshape_transform`: pick a layer with (N, C, H, W) output")
        if ablation_layer is not None:
            raise ValueError("custom `ablation_layer`s are not supported: leave it None (pytorch-grad-cam's default)")
        if ratio_channels_to_ablate != 1.0:
            raise ValueError("only `ratio_channels_to_ablate=1.0` (ablate every channel) is supported")
        super().__init__(model, target_layers, batch_size=batch_size)
        self.ratio_channels_to_ablate = ratio_channels_to_ablate

    batch_size = ScoreCAM.batch_size
