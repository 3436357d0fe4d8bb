"""pytorch-grad-cam 1.5.7's methods on :mod:`pycam_fast.methods` extractors (same names, same numbers)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import methods
from ...methods.spec import CamTerms
from ...ops.reference import spatial_minmax
from ...targets import ClassIdx, select_scores
from .ablation_layer import AblationLayer
from .base_cam import BaseCAM
from .utils.find_layers import replace_layer_recursive
from .utils.svd_on_activations import numpy_sign_projection

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


def _spatial_axes(array: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, array.ndim))


class GradCAM(BaseCAM):
    """Grad-CAM: ``w = mean_S(g)``."""

    extractor_cls = methods.GradCAM
    _eigen_generic = True

    def get_cam_weights(
        self, input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> np.ndarray:
        """``(N, C)`` weights ``mean_S(g)`` from NumPy arrays (float32 NumPy reductions, pytorch-grad-cam's)."""
        if np.ndim(grads) not in (4, 5):
            raise ValueError(f"grads must be (N, C, H, W) or (N, C, D, H, W), got shape {np.shape(grads)}")
        return np.mean(grads, axis=_spatial_axes(grads))


class HiResCAM(BaseCAM):
    """HiRes-CAM: ``cam = sum_c(g * A)``."""

    extractor_cls = methods.HiResCAM


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise: ``cam = sum_c(relu(g * A))``."""

    extractor_cls = methods.GradCAMElementWise


class _SpatialSumCAM(BaseCAM):
    """A built-in gradient method whose NumPy weights need ``sum_S(A)``: :meth:`get_cam_weights` computes it once."""

    _eigen_generic = True

    def get_cam_weights(
        self, input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> np.ndarray:
        """``(N, C)`` weights from NumPy arrays: :meth:`_numpy_weights` of ``g``, ``A`` and ``sum_S(A)``."""
        axes = _spatial_axes(activations)
        total = np.sum(activations, axis=axes).reshape(activations.shape[:2] + (1,) * len(axes))
        return self._numpy_weights(grads, activations, total, axes)

    def _numpy_weights(self, grads: Any, activations: Any, total: Any, axes: tuple[int, ...]) -> np.ndarray:
        """``(N, C)`` weights of ``(N, C, *S)`` gradients and activations, ``total = sum_S(A)`` ``(N, C, 1, ...)``."""
        raise NotImplementedError


class GradCAMPlusPlus(_SpatialSumCAM):
    """Grad-CAM++ with pytorch-grad-cam's epsilon (1e-6).

    NumPy weights ``sum_S(relu(g) a)`` with ``a = g^2 / (2 g^2 + sum_S(A) g^3 + 1e-6)`` (0 where ``g == 0``).
    """

    extractor_cls = methods.GradCAMpp
    weight_kwargs: ClassVar[dict[str, Any]] = {"eps": 1e-6}

    def _numpy_weights(self, grads: Any, activations: Any, total: Any, axes: tuple[int, ...]) -> np.ndarray:
        g2 = grads**2
        g3 = g2 * grads
        alpha = np.where(grads != 0, g2 / (2 * g2 + total * g3 + 1e-6), 0)
        return np.sum(np.maximum(grads, 0) * alpha, axis=axes)


class XGradCAM(_SpatialSumCAM):
    """XGrad-CAM with pytorch-grad-cam's epsilon (1e-7): NumPy weights ``sum_S(g A / (sum_S(A) + 1e-7))``."""

    extractor_cls = methods.XGradCAM
    weight_kwargs: ClassVar[dict[str, Any]] = {"eps": 1e-7}

    def _numpy_weights(self, grads: Any, activations: Any, total: Any, axes: tuple[int, ...]) -> np.ndarray:
        return (grads * activations / (total + 1e-7)).sum(axis=axes)


class LayerCAM(BaseCAM):
    """Layer-CAM: ``cam = sum_c(relu(g) * A)``."""

    extractor_cls = methods.LayerCAM


class _NumpySignProjection:
    """Extractor mixin: the map is the principal projection of :meth:`_features`, with pytorch-grad-cam's sign.

    The centring and factorisation run as pytorch-grad-cam's
    (see :func:`.utils.svd_on_activations.numpy_sign_projection`).
    """

    def _features(self, layer: Any) -> Tensor:
        return layer.activations

    def cam_terms(self, class_idx: Any, scores: Any = None, *, targets: Any = None, **kwargs: Any) -> list[CamTerms]:
        layers = self.layer_inputs(class_idx, scores, targets=targets, **kwargs)  # type: ignore[attr-defined]
        terms = []
        for layer in layers:
            with torch.no_grad():
                projection = numpy_sign_projection(self._features(layer)).unsqueeze(1)
            terms.append(CamTerms(projection.new_ones(1, 1), projection))
        return terms


class _EigenExtractor(_NumpySignProjection, methods.EigenCAM):
    pass


class _EigenGradExtractor(_NumpySignProjection, methods.EigenGradCAM):
    def _features(self, layer: Any) -> Tensor:
        return layer.grads * layer.activations


class EigenCAM(BaseCAM):
    """Eigen-CAM: first principal component of the activations, NumPy's singular-vector sign."""

    extractor_cls = _EigenExtractor
    uses_gradients = False
    supports_eigen_smooth = False
    optimized_copy = False  # the principal component amplifies rounding differences


class EigenGradCAM(BaseCAM):
    """Eigen-Grad-CAM: first principal component of ``g * A``, NumPy's singular-vector sign."""

    extractor_cls = _EigenGradExtractor
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
    (``eps=1e-8``); masked inputs are forwarded ``bs`` at a time (mixing samples), every channel included, on the
    private optimised copy where it computes what the model does (see :meth:`_masked_network`).
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
        network, chunks = self._masked_network(), []
        for start in range(0, num_pairs, self.bs):
            batch, samples = self._masked_chunk(act, start, min(start + self.bs, num_pairs))
            chunks.append(select_scores(network(batch), class_idx, targets, samples))
        return torch.cat(chunks).view(act.shape[:2])


class ScoreCAM(BaseCAM):
    """Score-CAM (gradient-free); ``cam.batch_size`` masked inputs per forward (default 16)."""

    extractor_cls = _ScoreWeights
    uses_gradients = False
    supports_fast_path = False  # the explained forward is the hooked model's (the masked ones: see _ScoreWeights)

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
    """Ablation-CAM: ``w_k = (y - y_k) / y`` with channel ``k`` ablated.

    With the defaults (``ablation_layer=None``, ``ratio_channels_to_ablate=1``, no ``reshape_transform``) it runs
    :class:`pycam_fast.methods.AblationCAM`, which evaluates only the model tail after the target layer on
    ``cam.batch_size`` ablated copies at a time. Otherwise (and with ``eigen_smooth``) it runs pytorch-grad-cam's
    procedure (the exact, slower path): the target layer is swapped for the ablation layer (see
    :mod:`.ablation_layer`) and every chunk of ablated copies goes through the whole model.

    Args:
        model: the model to explain.
        target_layers: a non-empty list of submodules of ``model``.
        reshape_transform: turns the layer's output into ``(N, C, H, W)`` (e.g. ViT tokens, with
            :class:`~.ablation_layer.AblationLayerVit`).
        ablation_layer: the stand-in layer (default: :class:`~.ablation_layer.AblationLayer`).
        batch_size: ablated copies per forward.
        ratio_channels_to_ablate: share of channels ablated (the rest keep the original score: weight 0);
            below 1 pytorch-grad-cam's Eigen-CAM-mask heuristic picks them.

    Raises:
        ValueError: ``ratio_channels_to_ablate`` outside ``(0, 1]`` or a non-positive ``batch_size``.

    """

    extractor_cls = methods.AblationCAM
    uses_gradients = False
    supports_fast_path = False  # it evaluates the model's own tail
    _eigen_generic = True

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Any = None,
        ablation_layer: nn.Module | None = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
    ) -> None:
        if not 0 < ratio_channels_to_ablate <= 1:
            raise ValueError(f"`ratio_channels_to_ablate` must be in (0, 1], got {ratio_channels_to_ablate!r}")
        # the tail extractor takes (N, C, H, W) layers only: with a reshape_transform the generic path runs
        super().__init__(model, target_layers, None, batch_size=batch_size)
        self.reshape_transform = self._hooks.reshape_transform = reshape_transform
        self.batch_size = batch_size
        self._custom_layer = ablation_layer is not None
        self.ablation_layer = ablation_layer if ablation_layer is not None else AblationLayer()
        self.ratio_channels_to_ablate = ratio_channels_to_ablate

    batch_size = ScoreCAM.batch_size

    def _uses_generic_path(self, eigen_smooth: bool = False) -> bool:
        return (
            super()._uses_generic_path(eigen_smooth)
            or self._custom_layer
            or self.ratio_channels_to_ablate != 1.0
            or self.reshape_transform is not None
        )

    def get_cam_weights(
        self, input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> np.ndarray:
        """``(N, C)`` weights ``(y - y_k) / y`` by swapping ``target_layer`` for the ablation layer.

        ``activations`` are the (reshape-transformed) ``(N, C, H, W)`` activations as a NumPy array.
        """
        recorded: list[Any] = []
        handle = target_layer.register_forward_hook(lambda _m, _i, out: recorded.append(out))
        try:
            with torch.no_grad():
                outputs = self.model(input_tensor)
        finally:
            handle.remove()
        original = _scores(targets, outputs)
        layer = self.ablation_layer
        channels_total = activations.shape[1]
        weights: list[np.ndarray] = []
        replace_layer_recursive(self.model, target_layer, layer)
        try:
            with torch.no_grad():
                for b, (target, image) in enumerate(zip(targets, input_tensor, strict=False)):
                    channels = layer.activations_to_be_ablated(activations[b, :], self.ratio_channels_to_ablate)
                    scores = []
                    for start in range(0, len(channels), self.batch_size):
                        count = min(self.batch_size, len(channels) - start)
                        layer.set_next_batch(
                            input_batch_index=b, activations=recorded[-1], num_channels_to_ablate=count
                        )
                        batch = image.unsqueeze(0).repeat(count, *([1] * image.ndim))
                        scores.append(_scores([target] * count, self.model(batch)))
                        layer.indices = layer.indices[count:]
                    ablated = np.concatenate(scores) if scores else np.zeros(0, np.float32)
                    weights.append(_assemble(ablated, original[b], np.asarray(channels), channels_total))
        finally:
            replace_layer_recursive(self.model, layer, target_layer)
        ablated_scores = np.float32(weights).reshape(activations.shape[:2])
        return (original[:, None] - ablated_scores) / original[:, None]


def _scores(targets: Any, outputs: Any) -> np.ndarray:
    """``float32`` score of each (target, output) pair, one host copy."""
    values = [target(output).reshape(()) for target, output in zip(targets, outputs, strict=False)]
    return torch.stack(values).float().cpu().numpy()


def _assemble(ablated: np.ndarray, original: np.float32, channels: np.ndarray, total: int) -> np.ndarray:
    """Per-channel scores ``(total,)``: the ablated score of each ablated channel, the original score elsewhere.

    Channels are matched in sorted order (a channel listed twice takes its first score, as pytorch-grad-cam).
    """
    order = np.argsort(channels)
    channels, ablated = channels[order], np.float32(ablated)[order]
    result = np.full(total, original, dtype=np.float32)
    position = 0
    for channel in range(total):
        if position < len(channels) and channels[position] == channel:
            result[channel] = ablated[position]
            position += 1
    return result
