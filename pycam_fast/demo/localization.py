"""Localisation metrics for CAMs against ground-truth object masks, at input resolution.

* pointing game: is the map's argmax on the object? (per image, bool)
* energy in mask: the share of the map's (non-negative) mass that lies on the object (per image, in ``[0, 1]``)

:func:`evaluate_method` runs one ``pycam_fast.methods`` extractor (TorchCAM API) on the true class of every image
and returns both scores averaged over the set.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .model import DEMO_FC_LAYER, DEMO_TARGET_LAYER

__all__ = [
    "POINTING_TOLERANCE",
    "LocalizationScores",
    "energy_in_mask",
    "evaluate_maps",
    "evaluate_method",
    "native_cam",
    "pointing_game",
    "resolve_method",
]


#: Tolerance (pixels) of the lenient pointing game: the 15 px of Zhang et al. (2016) at 224 px is ~4 px at 64 px.
POINTING_TOLERANCE = 3


@dataclass(frozen=True)
class LocalizationScores:
    """Mean localisation scores over a set of images.

    Attributes:
        pointing_game: share of images whose map argmax lies on the object, in ``[0, 1]``.
        pointing_game_tolerant: same, counting hits within ``tolerance`` pixels of the object.
        energy_in_mask: mean share of the map's mass on the object, in ``[0, 1]``.
        num_images: how many images were scored.
        tolerance: the tolerance (pixels) of ``pointing_game_tolerant``.

    """

    pointing_game: float
    pointing_game_tolerant: float
    energy_in_mask: float
    num_images: int
    tolerance: int = POINTING_TOLERANCE


def _check_pair(maps: Tensor, masks: Tensor) -> None:
    """Raise ``ValueError`` unless ``maps`` is ``(N, H, W)`` and ``masks`` has the same shape."""
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}")


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Per-image pointing game: the map's maximum (first one on ties) falls on the object.

    A constant map (e.g. all zeros) points at pixel ``(0, 0)`` like ``argmax`` does, so it usually misses.

    Args:
        maps: ``(N, H, W)`` saliency maps.
        masks: ``(N, H, W)`` bool object masks.
        tolerance: hits within this many pixels (Chebyshev distance) of the object also count.

    Returns:
        ``(N,)`` bool.

    """
    _check_pair(maps, masks)
    target = masks.bool()
    if tolerance > 0:
        k = 2 * tolerance + 1
        target = nnf.max_pool2d(target.float().unsqueeze(1), k, stride=1, padding=tolerance).squeeze(1).bool()
    idx = maps.flatten(1).argmax(dim=1, keepdim=True)
    return target.flatten(1).gather(1, idx.to(target.device)).squeeze(1)


def energy_in_mask(maps: Tensor, masks: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-image share of the map's mass inside the mask (negative values count as 0).

    Args:
        maps: ``(N, H, W)`` saliency maps.
        masks: ``(N, H, W)`` bool object masks.
        eps: maps with a total mass at most ``eps`` score 0.

    Returns:
        ``(N,)`` float32 in ``[0, 1]``.

    """
    _check_pair(maps, masks)
    mass = maps.detach().float().clamp_min(0).flatten(1)
    total = mass.sum(dim=1)
    inside = (mass * masks.flatten(1).to(mass.device, mass.dtype)).sum(dim=1)
    return torch.where(total > eps, inside / total.clamp_min(eps), torch.zeros_like(total))


def evaluate_maps(maps: Tensor, masks: Tensor, tolerance: int = POINTING_TOLERANCE) -> LocalizationScores:
    """Mean pointing games (strict and ``tolerance`` px) and energy in mask of ``(N, H, W)`` maps vs bool masks."""
    return LocalizationScores(
        pointing_game=pointing_game(maps, masks).float().mean().item(),
        pointing_game_tolerant=pointing_game(maps, masks, tolerance=tolerance).float().mean().item(),
        energy_in_mask=energy_in_mask(maps, masks).mean().item(),
        num_images=int(maps.shape[0]),
        tolerance=tolerance,
    )


@torch.no_grad()
def native_cam(model: nn.Module, images: Tensor, class_idx: Tensor) -> Tensor:
    """Compute the model's own CAM (Zhou et al. 2016), independent of ``pycam_fast.methods``: ReLU, min-max, upsampled.

    Needs a model with ``features`` and ``classifier`` attributes, like :class:`~pycam_fast.demo.DemoCNN`.

    Args:
        model: the CNN.
        images: ``(N, 3, H, W)``.
        class_idx: ``(N,)`` int64 class per image.

    Returns:
        ``(N, H, W)`` maps in ``[0, 1]``.

    """
    feats = model.features(images)
    weights = model.classifier.weight[class_idx.to(feats.device)]
    cams = torch.relu(torch.einsum("nc,nchw->nhw", weights, feats))
    lo = cams.flatten(1).amin(dim=1).view(-1, 1, 1)
    hi = cams.flatten(1).amax(dim=1).view(-1, 1, 1)
    cams = (cams - lo) / (hi - lo + 1e-8)
    return nnf.interpolate(cams.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)


def resolve_method(method: str | type) -> type:
    """Resolve a CAM class from its name in ``pycam_fast.methods`` (e.g. ``"GradCAM"``), or the class itself."""
    if isinstance(method, str):
        return getattr(importlib.import_module("pycam_fast.methods"), method)
    return method


def _extractor_kwargs(cls: type, target_layer: str, fc_layer: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Build constructor kwargs: the target layer, plus ``fc_layer`` for classes that take it (``CAM``)."""
    kwargs: dict[str, Any] = {"target_layer": target_layer}
    if "fc_layer" in inspect.signature(cls).parameters:
        kwargs["fc_layer"] = fc_layer
    kwargs.update(extra)
    return kwargs


def _remove_hooks(extractor: Any) -> None:
    """Detach an extractor's hooks (TorchCAM's ``remove_hooks``), if it has any."""
    remove = getattr(extractor, "remove_hooks", None)
    if callable(remove):
        remove()


def _batch_maps(extractor: Any, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """``(B, H, W)`` maps of one batch for the true classes, at input resolution."""
    with torch.enable_grad():
        scores = model(images)
        cams = extractor(class_idx=labels.tolist(), scores=scores, output_size=tuple(images.shape[-2:]))
    model.zero_grad(set_to_none=True)
    return cams[0].detach()


def evaluate_method(
    method: str | type,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    batch_size: int = 64,
    target_layer: str = DEMO_TARGET_LAYER,
    fc_layer: str = DEMO_FC_LAYER,
    method_kwargs: dict[str, Any] | None = None,
) -> LocalizationScores:
    """Localisation scores of one CAM method on the true class of every image.

    Args:
        method: a ``pycam_fast.methods`` class or its name (``"CAM"``, ``"GradCAM"``, ``"ScoreCAM"``, ...).
        model: the classifier (eval mode).
        images: ``(N, 3, H, W)`` inputs.
        labels: ``(N,)`` int64 true classes (the CAMs are computed for these).
        masks: ``(N, H, W)`` bool object masks.
        batch_size: images per forward pass.
        target_layer: name of the CAM layer in ``model``.
        fc_layer: name of the final linear layer (passed to classes that take ``fc_layer``, i.e. ``CAM``).
        method_kwargs: extra constructor kwargs, e.g. ``{"batch_size": 256}`` (masked inputs per forward pass) for
            the ScoreCAM family.

    Returns:
        the mean :class:`LocalizationScores` over the ``N`` images.

    """
    cls = resolve_method(method)
    extractor = cls(model, **_extractor_kwargs(cls, target_layer, fc_layer, method_kwargs or {}))
    try:
        maps = [
            _batch_maps(extractor, model, images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, images.shape[0], batch_size)
        ]
    finally:
        _remove_hooks(extractor)
    return evaluate_maps(torch.cat(maps).float().cpu(), masks.cpu())
