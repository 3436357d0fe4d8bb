"""Explainer-style calls of the hook-based methods: ``LeGrad``, ``RefineCAM`` and ``FinerCAM``.

These methods are defined by their TorchCAM-style classes in :mod:`pycam_fast.methods` (LeGrad needs the attention
maps of every block, RefineCAM several layers' maps, FinerCAM a contrastive score): they are not
:class:`~pycam_fast.methods.MethodSpec` kinds that :class:`~pycam_fast.Explainer` runs tail-only. A
:class:`HookedExplainer` runs them the TorchCAM way (the model's own forward with the class's hooks, then the map of
each sample's class) behind the Explainer's call: ``explainer(x, class_idx=None) -> (N, *S)`` maps at the input's
resolution in [0, 1], and ``explainer.logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import methods, ops
from ..model_state import model_eval

__all__ = ["HOOKED_METHODS", "HookedExplainer", "hooked_method"]

#: the hook-based methods, by name
HOOKED_METHODS: dict[str, type[methods.CAMExtractor]] = {
    "LeGrad": methods.LeGrad,
    "RefineCAM": methods.RefineCAM,
    "FinerCAM": methods.FinerCAM,
}


def hooked_method(name: str) -> str | None:
    """The hook-based method called ``name`` (case-insensitive), or ``None``."""
    return next((key for key in HOOKED_METHODS if key.lower() == str(name).lower()), None)


def attention_blocks(model: nn.Module) -> list[str]:
    """The blocks LeGrad explains by default: modules with an ``nn.MultiheadAttention`` named ``self_attention``."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(getattr(module, "self_attention", None), nn.MultiheadAttention)
    ]


class HookedExplainer:
    """One hook-based method behind the :class:`~pycam_fast.Explainer` call.

    Args:
        model: the classifier (run in eval mode during each call, then restored).
        method: ``"LeGrad"``, ``"RefineCAM"`` or ``"FinerCAM"`` (case-insensitive).
        target_layer: a layer name, or several (RefineCAM: two or more; LeGrad: its blocks). ``None``: FinerCAM's
            automatic layer, LeGrad's every attention block; RefineCAM needs them.
        options: further keyword arguments of the method's class (e.g. ``gamma``, ``base_method``, ``backend``).

    Raises:
        ValueError: an unknown method, missing layers or bad options.

    """

    def __init__(
        self, model: nn.Module, method: str, target_layer: str | Sequence[str] | None = None, **options: Any
    ) -> None:
        name = hooked_method(method)
        if name is None:
            raise ValueError(f"unknown hook-based method {method!r}; choose one of: {', '.join(HOOKED_METHODS)}")
        self.model, self.method, self.options = model, name, options
        self.layers = self._layers(target_layer)
        self.logits: Tensor | None = None

    def _layers(self, target_layer: str | Sequence[str] | None) -> list[str] | None:
        if target_layer is None:
            layers = None
        else:
            layers = [target_layer] if isinstance(target_layer, str) else list(target_layer)
        if self.method == "LeGrad" and layers is None:
            layers = attention_blocks(self.model)
            if not layers:
                raise ValueError(
                    "LeGrad explains vision-transformer blocks that hold an nn.MultiheadAttention named "
                    "`self_attention` (e.g. torchvision's VisionTransformer); this model has none: name the blocks"
                )
        if self.method == "RefineCAM" and (layers is None or len(layers) < 2):
            raise ValueError("RefineCAM fuses the maps of several layers: name two or more target layers")
        if self.method == "FinerCAM" and layers is not None and len(layers) > 1:
            raise ValueError(f"FinerCAM explains one layer, got {len(layers)}")
        return layers

    def _extractor(self, inputs: Tensor) -> methods.CAMExtractor:
        cls = HOOKED_METHODS[self.method]
        if self.method == "LeGrad":
            return cls(self.model, self.layers, **self.options)
        layer = self.layers[0] if self.method == "FinerCAM" and self.layers else self.layers
        return cls(self.model, layer, input_shape=tuple(inputs.shape[1:]), **self.options)

    def __call__(self, inputs: Tensor, class_idx: int | Sequence[int] | None = None) -> Tensor:
        """Maps of ``inputs`` ``(N, C, *S)`` for ``class_idx`` (default: each sample's top class): ``(N, *S)``."""
        with model_eval(self.model), self._extractor(inputs) as extractor, torch.enable_grad():
            scores = self.model(inputs)
            classes = scores.argmax(1).tolist() if class_idx is None else class_idx
            cams = extractor(classes if isinstance(classes, int) else list(classes), scores)
            fused = extractor.fuse_cams(cams).detach()
        self.logits = scores.detach()
        unit = fused.new_ones(1, 1)
        return ops.cam_step(unit, fused.unsqueeze(1), relu=False, output_size=tuple(inputs.shape[2:]), normalize=True)
