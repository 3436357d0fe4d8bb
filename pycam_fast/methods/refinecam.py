"""RefineCAM ("How to Evaluate and Refine your CAM", 2026): the product of a base method's maps over several layers.

As TorchCAM 0.5.0 computes it: the base extractor's per-layer maps (always normalised) are normalised again,
resized to the largest map (bilinear/trilinear, ``align_corners=False``; nearest for 1-D maps) or ``target_shape``,
multiplied element-wise, and the product is min-max normalised when ``normalized``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import ops
from ..targets import ClassIdx, OutputTarget
from .extractor import CAMExtractor, check_cams
from .gradcampp import GradCAMpp
from .wrapped import WrappedExtractor

__all__ = ["RefineCAM", "refine_cams"]

_MODES = {3: "bilinear", 4: "trilinear"}


def _minmax(cam: Tensor) -> Tensor:
    """Per-sample ``(x - min) / (max(x - min) + 1e-8)`` over the spatial dims of ``(N, *S)`` (a new tensor)."""
    dims = tuple(range(1, cam.ndim))
    shifted = cam - cam.amin(dim=dims, keepdim=True)
    return shifted / (shifted.amax(dim=dims, keepdim=True) + ops.DEFAULT_EPS)


@torch.no_grad()
def refine_cams(cams: list[Tensor], target_shape: tuple[int, ...] | None = None, normalized: bool = True) -> Tensor:
    """Fuse per-layer maps by the product of their normalised, resized versions.

    Args:
        cams: ``(N, *S_l)`` maps of one input, one per layer.
        target_shape: spatial shape of the result (default: the largest of each dim).
        normalized: min-max normalise the product.

    Returns:
        ``(N, *target_shape)`` refined map.

    Raises:
        TypeError: ``cams`` is not a list of tensors.
        ValueError: ``cams`` is empty.

    """
    check_cams(cams, "invalid argument type for `cams`")
    shape = target_shape or tuple(max(dims) for dims in zip(*(cam.shape[1:] for cam in cams), strict=True))
    mode = _MODES.get(cams[0].ndim, "nearest")
    extra = {} if mode == "nearest" else {"align_corners": False}
    product: Tensor | None = None
    for cam in cams:
        resized = F.interpolate(_minmax(cam).unsqueeze(1), shape, mode=mode, **extra)
        product = resized if product is None else product * resized
    refined = product.squeeze(1)  # type: ignore[union-attr]
    return _minmax(refined) if normalized else refined


class RefineCAM(WrappedExtractor):
    r"""RefineCAM: ``L = minmax(prod_l resize(minmax(L_l)))`` over the base method's maps ``L_l`` of several layers.

    Args:
        model: the model to explain.
        target_layer: at least two layers (modules or dotted names).
        input_shape: one sample's input shape (passed to the base extractor).
        base_method: the extractor class producing the per-layer maps (default: Grad-CAM++).
        base_kwargs: keyword arguments of ``base_method`` (``reshape_transform``, options, ``backend``).

    Raises:
        ValueError: fewer than two target layers.
        TypeError: ``base_method`` is not an extractor class.

    """

    default_base: type[CAMExtractor] = GradCAMpp

    def __init__(
        self,
        model: nn.Module,
        target_layer: list[nn.Module | str],
        input_shape: tuple[int, ...] = (3, 224, 224),
        *,
        base_method: type[CAMExtractor] | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not isinstance(target_layer, list) or len(target_layer) < 2:
            raise ValueError("RefineCAM requires at least two target layers")
        base_method = type(self).default_base if base_method is None else base_method
        if not isinstance(base_method, type) or not issubclass(base_method, CAMExtractor):
            raise TypeError("base_method must be a CAM extractor class")
        super().__init__(base_method(model, target_layer, input_shape=input_shape, **base_kwargs))

    def _maps(
        self,
        base: Callable[..., list[Tensor]],
        class_idx: ClassIdx | None = None,
        scores: Any = None,
        normalized: bool = True,
        target_shape: tuple[int, ...] | None = None,
        *,
        targets: OutputTarget | list[OutputTarget] | None = None,
        **kwargs: Any,
    ) -> list[Tensor]:
        """One refined ``(N, *target_shape)`` map (in a list) from the base method's per-layer maps."""
        cams = base(class_idx, scores, normalized=True, targets=targets, **kwargs)
        return [refine_cams(cams, target_shape, normalized)]

    @staticmethod
    def fuse_cams(cams: list[Tensor], target_shape: tuple[int, ...] | None = None, normalized: bool = True) -> Tensor:
        """Fuse per-layer maps as RefineCAM does (see :func:`refine_cams`)."""
        return refine_cams(cams, target_shape, normalized)

    def __repr__(self) -> str:
        return f"RefineCAM(base_method={type(self.base_cam).__name__}, target_layer={self.target_names})"
