r"""Xplique-style front-end: ``GradCAM(model).explain(inputs, targets)`` on a whole batch, in PyTorch.

Xplique (TensorFlow) documents Grad-CAM as

- weights ``alpha_k = (1/Z) sum_{i,j} dY/dA^k_{ij}`` (``Z`` = number of positions of the feature map ``A``),
- map ``L = ReLU(sum_k alpha_k A^k)``, interpolated to the input size,

with ``Y = sum_c y_c * t_c`` the model output weighted by the target (a one-hot row picks the class score). Its
ReLU-gradient variants change the gradients used for the weights:

- ``"guided"`` (Guided-ReLU, the default): ``g * [g > 0] * [A > 0]``, only positive gradients of positive
  activations;
- ``"deconv"`` (Deconv-ReLU): ``g * [g > 0]``, only positive gradients;
- ``"backward"``: the plain gradient ``g``, the original paper's Grad-CAM.

This module maps them onto :class:`pycam_fast.methods.GradCAM` (``gradient_filter="guided" | "deconv" | None``); the
map is resized with bilinear interpolation (``align_corners=False``; linear / trilinear for 1-D / 3-D inputs) after
the ReLU, and is not normalised. Inputs are ``(N, C, *S)`` (PyTorch's channel-first layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import methods
from ..layers import locate_candidate_layer
from ..model_state import model_eval

__all__ = ["VARIANTS", "GradCAM"]

#: Xplique's variants and the :class:`~pycam_fast.methods.GradCAM` gradient filter each maps to
VARIANTS: dict[str, str | None] = {"guided": "guided", "deconv": "deconv", "backward": None}

_RESIZE_MODES = {3: "linear", 4: "bilinear", 5: "trilinear"}


class GradCAM:
    r"""Grad-CAM with Xplique's interface and ReLU-gradient variants.

    ``L = ReLU(sum_k alpha_k A^k)`` with ``alpha_k = mean_{ij} f(dY/dA^k_{ij})``, ``f`` the variant's filter
    (``"guided"``: ``g [g > 0] [A > 0]``; ``"deconv"``: ``g [g > 0]``; ``"backward"``: ``g``), then resized to the
    input's spatial size (bilinear).

    Layers are given as Xplique takes them: a module, its dotted name, or an int indexing
    ``[m for name, m in model.named_modules() if name]`` (negative from the end).

    Args:
        model: a PyTorch model returning ``(N, K)`` scores (run in eval mode during :meth:`explain`, then restored).
        output_layer: the layer whose ``(N, K)`` output is ``y`` (e.g. the logits of a model that ends with a
            softmax); ``None``: the model's output.
        batch_size: how many inputs one forward/backward takes (``None``: all at once).
        conv_layer: the layer whose feature maps ``A`` are explained; ``None``: the last layer whose output keeps
            the input's rank with a spatial dim > 1, found at the first :meth:`explain`.
        variant: ``"guided"`` (default), ``"deconv"`` or ``"backward"``.

    Raises:
        TypeError: a model that is not an ``nn.Module`` or a bad ``output_layer`` / ``conv_layer`` type.
        ValueError: a bad ``batch_size``, ``variant``, ``output_layer`` or ``conv_layer`` (unknown name, index out
            of range).

    """

    def __init__(
        self,
        model: nn.Module,
        output_layer: nn.Module | str | int | None = None,
        batch_size: int | None = 32,
        conv_layer: nn.Module | str | int | None = None,
        variant: str = "guided",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}")
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.model, self.batch_size, self.variant = model, batch_size, variant
        self.output_name: str | None = None if output_layer is None else self._layer_name(output_layer, "output_layer")
        self.layer_name: str | None = None if conv_layer is None else self._layer_name(conv_layer, "conv_layer")

    def _layer_name(self, layer: Any, arg: str) -> str:
        named = [(name, module) for name, module in self.model.named_modules() if name]
        if isinstance(layer, bool) or not isinstance(layer, (int, str, nn.Module)):
            raise TypeError(f"`{arg}` must be None, a module, a name or an int index, got {type(layer).__name__}")
        if isinstance(layer, int):
            if not -len(named) <= layer < len(named):
                raise ValueError(f"`{arg}` index {layer} is out of range for {len(named)} named modules")
            return named[layer][0]
        if isinstance(layer, str):
            if layer not in dict(named):
                raise ValueError(f"`{arg}` {layer!r} is not a module of the model; see `model.named_modules()`")
            return layer
        name = next((n for n, m in named if m is layer), None)
        if name is None:
            raise ValueError(f"`{arg}` is not a submodule of the model")
        return name

    def explain(self, inputs: Tensor, targets: Tensor | Any) -> Tensor:
        """Grad-CAM maps of a batch at the input's resolution.

        Args:
            inputs: ``(N, C, *S)`` floating-point batch (1-3 spatial dims).
            targets: ``(N, K)`` one-hot rows (or any weights: ``Y = sum_c y_c t_c``) or ``(N,)`` class indices (a
                tensor, or anything ``torch.as_tensor`` takes).

        Returns:
            ``(N, *S)`` non-negative maps in the input's dtype, detached.

        Raises:
            TypeError: ``inputs`` that is not a floating-point tensor.
            ValueError: a bad rank or batch size of ``inputs``/``targets``, or class indices out of range.

        """
        if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
            raise TypeError(f"`inputs` must be a floating-point tensor, got {getattr(inputs, 'dtype', type(inputs))}")
        if inputs.ndim not in _RESIZE_MODES:
            raise ValueError(f"`inputs` must be (N, C, *S) with 1-3 spatial dims, got shape {tuple(inputs.shape)}")
        targets = self._targets(targets, inputs.shape[0])
        if self.layer_name is None:
            name = locate_candidate_layer(self.model, tuple(inputs.shape[1:]))
            if name is None:
                raise ValueError("no convolution-like layer found: pass `conv_layer`")
            self.layer_name = name
        step = self.batch_size or inputs.shape[0]
        maps = [
            self._explain_batch(inputs[i : i + step], targets[i : i + step]) for i in range(0, inputs.shape[0], step)
        ]
        return torch.cat(maps) if maps else inputs.new_zeros(inputs.shape[:1] + inputs.shape[2:])

    @staticmethod
    def _targets(targets: Any, batch: int) -> Tensor:
        try:
            t = targets if isinstance(targets, Tensor) else torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"`targets` must be (N, K) one-hot rows or (N,) class indices ({exc})") from exc
        if t.ndim not in (1, 2) or t.shape[0] != batch:
            raise ValueError(
                f"`targets` must be (N, K) one-hot rows or (N,) class indices with N={batch}, "
                f"got shape {tuple(t.shape)}"
            )
        if t.ndim == 1 and (t.is_floating_point() or t.dtype == torch.bool):
            raise ValueError(f"class-index `targets` must be integers, got {t.dtype}")
        return t.detach()

    def _explain_batch(self, x: Tensor, t: Tensor) -> Tensor:
        if t.ndim == 1:
            class_idx: list[int] | None = t.tolist()
            callables = None
        elif bool(((t == 0) | (t == 1)).all()) and bool((t.sum(1) == 1).all()):
            class_idx, callables = t.argmax(1).tolist(), None
        else:
            weights = t.to(x.device)
            class_idx = None
            callables = [lambda out, w=w: (out * w.to(out.dtype)).sum() for w in weights]
        if class_idx is not None and min(class_idx) < 0:
            raise ValueError(f"class-index `targets` must be non-negative, got {min(class_idx)}")
        gradient_filter = VARIANTS[self.variant]
        with (
            model_eval(self.model),
            methods.GradCAM(self.model, self.layer_name, gradient_filter=gradient_filter) as extractor,
            torch.enable_grad(),
            _output_of(self.model, self.output_name) as calls,
        ):
            scores = self.model(x.detach().requires_grad_(True))
            if self.output_name is not None:
                scores = _only_output(calls, self.output_name)
            if callables is not None and (not isinstance(scores, Tensor) or scores.shape != (x.shape[0], t.shape[1])):
                shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
                raise ValueError(f"(N, K) `targets` {tuple(t.shape)} do not match the model output {shape}")
            cam = extractor(class_idx, scores, normalized=False, targets=callables)[0]
        size = tuple(x.shape[2:])
        resized = F.interpolate(cam.unsqueeze(1), size=size, mode=_RESIZE_MODES[x.ndim], align_corners=False)
        return resized.squeeze(1).to(x.dtype).detach()


@contextmanager
def _output_of(model: nn.Module, name: str | None) -> Iterator[list[Any]]:
    """Record the outputs of ``model``'s submodule ``name`` during the block (nothing when ``None``)."""
    calls: list[Any] = []
    handle = (
        None if name is None else model.get_submodule(name).register_forward_hook(lambda _m, _i, o: calls.append(o))
    )
    try:
        yield calls
    finally:
        if handle is not None:
            handle.remove()


def _only_output(calls: list[Any], name: str) -> Any:
    """The one output ``output_layer`` produced in a forward.

    Raises:
        ValueError: it ran zero or several times.

    """
    if len(calls) != 1:
        raise ValueError(f"`output_layer` {name!r} ran {len(calls)} times in one forward (it must run once)")
    return calls[0]
