"""Captum conventions: signed, unnormalised Grad-CAM maps like ``captum.attr.LayerGradCam``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import methods

__all__ = ["layer_gradcam"]


class _SignedGradCAM(methods.GradCAM):
    """Grad-CAM without the final ReLU (Captum's ``relu_attributions=False``)."""

    def __init__(self, *args: object, relu: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._relu = relu


def _class_indices(target: int | Sequence[int] | Tensor, batch: int) -> int | list[int]:
    """Captum's ``target`` (an int, or one int per sample as a list or 1-D tensor) as ``class_idx``.

    Raises:
        TypeError: another kind of target (Captum's tuple targets for multi-dim outputs are not supported).
        ValueError: per-sample targets whose length is not the batch size.

    """
    if isinstance(target, Tensor):
        if target.numel() == 1:
            return int(target.item())
        target = target.reshape(-1).tolist()
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, list) and all(isinstance(t, int) for t in target):
        if len(target) != batch:
            raise ValueError(f"`target` needs one class per sample: got {len(target)} for a batch of {batch}")
        return target
    raise TypeError(
        "`target` must be an int, a list of ints or a 1-D tensor of class indices (one per sample), "
        f"got {type(target).__name__}"
    )


def layer_gradcam(
    model: nn.Module,
    layer: nn.Module,
    inputs: Tensor,
    target: int | Sequence[int] | Tensor,
    relu_attributions: bool = False,
) -> Tensor:
    """Grad-CAM maps equal to Captum's ``LayerGradCam(model, layer).attribute(inputs, target, relu_attributions)``.

    ``sum_c(mean_S(dY/dA_c) * A_c)`` at the layer's resolution, signed unless ``relu_attributions``, never
    normalised. The model's training mode is left as it is (Captum does not switch it either); the backward covers
    only the tail after ``layer`` and leaves parameter ``.grad`` untouched.

    Args:
        model: a classifier returning ``(N, K)`` scores.
        layer: the submodule to attribute to.
        inputs: ``(N, C, *S_in)`` batch.
        target: the class: one int, or one per sample (list or 1-D tensor).
        relu_attributions: clamp negative values, as Captum's option.

    Returns:
        ``(N, 1, *S)`` attributions in the layer output's dtype.

    """
    with _SignedGradCAM(model, layer, relu=relu_attributions) as extractor, torch.enable_grad():
        scores = model(inputs.detach().requires_grad_(True))
        class_idx = _class_indices(target, inputs.shape[0])
        return extractor(class_idx, scores, normalized=False)[0].unsqueeze(1)
