"""``pytorch_grad_cam.fullgrad_cam``: :class:`FullGrad` (input-gradient and bias-gradient saliency of every layer)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base_cam import BaseCAM
from .utils.find_layers import find_layer_predicate_recursive
from .utils.image import scale_maps
from .utils.svd_on_activations import numpy_sign_projection

__all__ = ["FullGrad"]


def _has_2d_bias(layer: nn.Module) -> bool:
    """A ``Conv2d`` / ``BatchNorm2d`` (exact types, as pytorch-grad-cam) with a bias."""
    return type(layer) in (nn.Conv2d, nn.BatchNorm2d) and getattr(layer, "bias", None) is not None


class FullGrad(BaseCAM):
    """FullGrad (Srinivas & Fleuret 2019): ``|x * dy/dx|`` plus ``|b * dy/dz|`` of every biased layer, summed.

    ``target_layers`` is ignored: every ``Conv2d`` / ``BatchNorm2d`` with a bias is used (a batch norm's bias is
    its eval-mode offset ``beta - mean * gamma / sqrt(var + eps)``). ONE backward gives the input gradient and every
    layer's output gradient; each ``(sample, channel)`` map is min-max normalised, and since resizing is linear each
    layer's channels are summed at feature resolution and resized once (pytorch-grad-cam resizes every channel on
    the CPU); all of it in torch on the device. The biases are read at each call (pytorch-grad-cam reads them once,
    at construction).

    Args:
        model: the model to explain.
        target_layers: ignored (pytorch-grad-cam prints a warning when it is not empty).
        reshape_transform: applied to the hooked gradients.

    """

    _generic = True
    _allows_no_layers = True

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform: Any = None) -> None:
        layers = find_layer_predicate_recursive(model, _has_2d_bias)
        super().__init__(model, layers, reshape_transform, compute_input_gradient=True)

    @staticmethod
    def get_bias_data(layer: nn.Module) -> Tensor:
        """The layer's bias ``(C,)``; for a batch norm, its eval-mode offset ``beta - mean * gamma / sqrt(var + eps)``.

        Returns:
            ``(C,)`` detached tensor.

        """
        if isinstance(layer, nn.BatchNorm2d):
            shift = layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)  # type: ignore[operator]
            return (-shift + layer.bias).detach()
        return layer.bias.detach()  # type: ignore[union-attr]

    @property
    def bias_data(self) -> list[Tensor]:
        """Each target layer's bias (see :meth:`get_bias_data`)."""
        return [self.get_bias_data(layer) for layer in self.target_layers]

    def _full_maps(self, input_tensor: Tensor, size: tuple[int, ...]) -> list[Tensor]:
        """``(N, 1, H, W)`` summed channel maps: the input term, then one per layer (at the input's size)."""
        grads = list(self._hooks.gradients)
        if len(grads) != len(self.target_layers):
            raise RuntimeError(
                f"FullGrad got {len(grads)} layer gradients for {len(self.target_layers)} biased layers: every "
                "Conv2d / BatchNorm2d with a bias must be called exactly once and reach the explained output"
            )
        x = input_tensor.detach()
        grad_x = input_tensor.grad
        if grad_x is None:
            grad_x = torch.zeros_like(x)
        batch = x.shape[0]
        maps = [scale_maps((grad_x * x).abs().flatten(0, 1)).view(batch, -1, *x.shape[2:]).sum(dim=1, keepdim=True)]
        for layer, grad in zip(self.target_layers, grads, strict=True):
            bias = self.get_bias_data(layer).to(grad.device, grad.dtype)
            terms = (bias.view(1, -1, 1, 1) * grad).abs()
            summed = scale_maps(terms.flatten(0, 1)).view(terms.shape).sum(dim=1)  # (N, h, w)
            maps.append(self._resize(summed, size).unsqueeze(1))
        return maps

    @staticmethod
    def _resize(maps: Tensor, size: tuple[int, ...]) -> Tensor:
        """``(B, h, w) -> (B, H, W)`` bilinear (``align_corners=False``), no normalisation."""
        if tuple(maps.shape[1:]) == tuple(size):
            return maps
        return torch.nn.functional.interpolate(
            maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False
        ).squeeze(1)

    def _cam_per_layer(self, input_tensor: Tensor, targets: Any, eigen_smooth: bool) -> list[Tensor]:
        size = tuple(input_tensor.shape[2:])
        if not eigen_smooth:
            maps = self._full_maps(input_tensor, size)
            return [torch.stack(maps).sum(dim=0)]  # (N, 1, H, W)
        x = input_tensor.detach()
        grad_x = input_tensor.grad if input_tensor.grad is not None else torch.zeros_like(x)
        channels = [scale_maps((grad_x * x).abs().flatten(0, 1)).view(x.shape)]
        for layer_map in self._full_maps(input_tensor, size)[1:]:
            channels.append(layer_map)
        stacked = torch.cat(channels, dim=1)  # (N, Cin + L, H, W)
        small = (max(size[0] // 8, 1), max(size[1] // 8, 1))
        reduced = scale_maps(stacked.flatten(0, 1), small[::-1]).view(*stacked.shape[:2], *small)
        projection = numpy_sign_projection(reduced)  # (N, h, w)
        return [scale_maps(projection, size[::-1]).unsqueeze(1)]

    def _aggregate(self, maps: list[Tensor]) -> Tensor:  # type: ignore[override]
        return scale_maps(torch.cat(maps, dim=1).sum(dim=1))

    def aggregate_multi_layers(self, cam_per_target_layer: list[Any]) -> Any:
        """Sum of the ``(N, K, H, W)`` maps over ``K``, min-max normalised: ``(N, H, W)`` float32 array."""
        maps = [torch.as_tensor(m) for m in cam_per_target_layer]
        return self._aggregate(maps).cpu().numpy()
