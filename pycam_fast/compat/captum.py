"""Captum 0.9 front-end: ``captum.attr`` classes with the same signatures and numbers, over pycam_fast's engine.

Replace the import prefix ``captum.attr`` with ``pycam_fast.compat.captum``::

    from pycam_fast.compat.captum import LayerAttribution, LayerGradCam

    attr = LayerGradCam(model, model.layer4).attribute(x, target=3)  # (N, 1, h, w), signed
    up = LayerAttribution.interpolate(attr, (224, 224), "bilinear")

Classes: :class:`LayerGradCam`, :class:`LayerGradientXActivation`, :class:`GuidedBackprop`, :class:`Deconvolution`,
:class:`GuidedGradCam` and :class:`LayerAttribution` (its static ``interpolate``). Captum's conventions are kept:
tensor or tuple inputs, ``additional_forward_args`` appended to the inputs, every ``target`` form (``None`` for one
scalar per sample, an int, a tuple index into a multi-dim output, a list of ints or tuples per sample, a 1-D tensor),
``attribute_to_layer_input``, tuple results where Captum returns tuples, and the dtypes and shapes of Captum's results.

Differences: the results carry no autograd graph (Captum's layer attributions do), ``device_ids`` is accepted and
ignored (no ``DataParallel`` gathering), and invalid arguments raise ``TypeError``/``ValueError`` naming the argument
where Captum asserts.

How it is computed: gradients are taken with respect to the layer only, so only the model tail after the layer is
recorded and back-propagated (the part before it runs without autograd). When ``forward_func`` is an ``nn.Module`` in
eval mode without foreign hooks, the input a single 4-D tensor, ``target`` class indices and the layer output used
(``attribute_to_layer_input=False``), :class:`LayerGradCam` and :class:`LayerGradientXActivation` run the engine's
explained forward (:mod:`pycam_fast.forward.explained`): the private inference copy of the model (batchnorm folded,
channels-last) and, for a ``pool -> flatten -> Linear`` head, closed-form gradients; Grad-CAM's weights and channel
sum are one fused op. Guided backpropagation is :mod:`pycam_fast.forward.guided`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import methods, ops
from ..forward.explained import ExplainedForward
from ..forward.guided import rule_input_gradients
from ..targets import class_indices

__all__ = [
    "Deconvolution",
    "GuidedBackprop",
    "GuidedGradCam",
    "LayerAttribution",
    "LayerGradCam",
    "LayerGradientXActivation",
    "layer_gradcam",
]

TargetType = int | tuple[Any, ...] | Tensor | list[Any] | None
Inputs = Tensor | tuple[Tensor, ...]


# -- argument handling (Captum's formats) --------------------------------------------------------------------------
def _input_tuple(inputs: Any) -> tuple[Tensor, ...]:
    """Captum's ``inputs``: a tensor or a tuple of tensors, as a tuple.

    Raises:
        TypeError: anything else.

    """
    items = inputs if isinstance(inputs, tuple) else (inputs,)
    if not items or any(not isinstance(x, Tensor) for x in items):
        raise TypeError(f"`inputs` must be a tensor or a non-empty tuple of tensors, got {type(inputs).__name__}")
    return items


def _extra_args(additional_forward_args: Any) -> tuple[Any, ...]:
    """Captum's ``additional_forward_args``: ``None``, one argument, or a tuple of them."""
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def select_targets(output: Any, target: TargetType) -> Tensor:
    """The scores Captum differentiates: ``output`` indexed by ``target`` (Captum's ``_select_targets`` rules).

    Args:
        output: the forward's ``(N, ...)`` output.
        target: ``None`` (the output itself), an int or a tuple (the same index into every sample's output), a
            scalar tensor (an int), a 1-D tensor or list of N ints (one column of a 2-D output per sample), or a
            list of N tuples (one index per sample).

    Returns:
        the selected scores, ``(N, ...)``.

    Raises:
        TypeError: an output that is not a tensor, or a target of another type.
        ValueError: a target that does not fit the output (length, rank).

    """
    if not isinstance(output, Tensor) or output.ndim == 0:
        kind = "a 0-d tensor" if isinstance(output, Tensor) else type(output).__name__
        raise TypeError(f"the forward function must return an (N, ...) tensor, got {kind}")
    if target is None:
        return output
    batch, dims = output.shape[0], output.ndim
    if isinstance(target, Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    if _is_int(target) or isinstance(target, tuple):
        index = (target,) if _is_int(target) else target
        if len(index) > dims - 1:
            raise ValueError(f"`target` {target!r} has more indices than the output's {dims - 1} non-batch dims")
        return output[(slice(None), *index)]
    if isinstance(target, Tensor):
        if target.ndim != 1 or target.numel() != batch or target.is_floating_point():
            raise ValueError(
                f"a tensor `target` must hold one integer or N={batch} integers (1-D), got shape {tuple(target.shape)}"
            )
        target = target.tolist()
    if isinstance(target, list):
        if len(target) != batch:
            raise ValueError(f"`target` list has {len(target)} entries but the batch has {batch} samples")
        if all(_is_int(t) for t in target):
            if dims != 2:
                raise ValueError(f"a list of ints as `target` needs a 2-D (N, K) output, got {dims}-D")
            return output[torch.arange(batch, device=output.device), torch.as_tensor(target, device=output.device)]
        if all(isinstance(t, tuple) for t in target):
            return torch.stack([output[(i, *t)] for i, t in enumerate(target)])
        raise TypeError("`target` list must hold only ints or only tuples (one per sample)")
    raise TypeError(
        f"`target` must be None, an int, a tuple, a list of ints or tuples, or a tensor; got {type(target).__name__}"
    )


def _check_scalar_scores(scores: Tensor, target: TargetType) -> None:
    if scores.ndim > 1 and scores[0].numel() != 1:
        raise ValueError(
            f"the selected output has shape {tuple(scores.shape)}, not one scalar per sample: pass `target` (e.g. the "
            "class index) to pick one output per sample"
            + ("" if target is None else f" (target {target!r} leaves more than one)")
        )


def _module_of(forward_func: Any) -> nn.Module | None:
    """The module ``forward_func`` is (a module, or its bound ``forward``), else ``None``."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(forward_func, "__func__", None) is type(owner).forward:
        return owner
    return None


def _check_layers(layer: Any, name: str = "layer") -> None:
    layers = layer if isinstance(layer, list) else [layer]
    if not layers or any(not isinstance(m, nn.Module) for m in layers):
        raise TypeError(f"`{name}` must be an nn.Module (or, where Captum allows it, a list of them)")


# -- layer gradients and evaluations -------------------------------------------------------------------------------
def _pack(values: Any, like: Any) -> Any:
    """``values`` (a tuple) in the structure of ``like`` (a tensor, a tuple or a list)."""
    if isinstance(like, Tensor):
        return values[0]
    return list(values) if isinstance(like, list) else tuple(values)


def layer_evals_and_grads(
    forward_func: Callable[..., Any],
    layers: Sequence[nn.Module],
    inputs: tuple[Tensor, ...],
    target: TargetType,
    extra_args: tuple[Any, ...],
    attribute_to_layer_input: bool = False,
    grad_kwargs: dict[str, Any] | None = None,
) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
    """Each layer's evaluation (its output, or its input) and the selected scores' gradients with respect to it.

    Only the part of the forward after the first hooked layer call is recorded (grad mode is off before it): that
    layer's tensors become graph leaves (later layers' tensors stay in the graph), so the backward covers the tail
    only. A layer called several times keeps its
    last call (as Captum).

    Args:
        forward_func: the model or function, called as ``forward_func(*inputs, *extra_args)``.
        layers: the modules to attribute to.
        inputs: the input tensors.
        target: Captum's target (see :func:`select_targets`).
        extra_args: further positional arguments.
        attribute_to_layer_input: use the layers' inputs instead of their outputs.
        grad_kwargs: keyword arguments for ``torch.autograd.grad``.

    Returns:
        per layer, ``(evals, grads)``: tuples of detached tensors, one per tensor of the layer's output/input.

    Raises:
        TypeError: a layer output/input that is not a tensor or a tuple/list of tensors.
        ValueError: a layer the forward did not run, or scores that are not one scalar per sample.

    """
    saved: dict[int, tuple[Tensor, ...]] = {}

    def leaves(idx: int, values: Any, where: str) -> tuple[Tensor, ...]:
        items = (values,) if isinstance(values, Tensor) else values
        if not isinstance(items, (tuple, list)) or not items or any(not isinstance(v, Tensor) for v in items):
            raise TypeError(
                f"the layer's {where} is a {type(values).__name__}; Captum's layer methods need a tensor or a tuple "
                "of tensors there"
            )
        if not torch.is_grad_enabled():  # the first layer call: its tensors become leaves, the tail is recorded
            torch.set_grad_enabled(True)
        saved[idx] = tuple(v if v.requires_grad else v.detach().requires_grad_(v.is_floating_point()) for v in items)
        return tuple(v.clone() for v in saved[idx])

    def out_hook(_m: nn.Module, _args: Any, output: Any, idx: int) -> Any:
        return _pack(leaves(idx, output, "output"), output)

    def in_hook(_m: nn.Module, args: Any, idx: int) -> Any:
        return leaves(idx, args, "input")

    previous = torch.is_grad_enabled()
    handles = []
    try:
        for idx, layer in enumerate(layers):
            if attribute_to_layer_input:
                handles.append(layer.register_forward_pre_hook(lambda m, a, idx=idx: in_hook(m, a, idx)))
            else:
                handles.append(layer.register_forward_hook(lambda m, a, o, idx=idx: out_hook(m, a, o, idx)))
        torch.set_grad_enabled(False)
        output = forward_func(*inputs, *extra_args)
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(previous)
    if len(saved) != len(layers):
        raise ValueError("the forward did not run the given `layer`: pass a submodule the forward function calls")
    wrt = [t for idx in range(len(layers)) for t in saved[idx]]
    with torch.enable_grad():  # the selection joins the tail's graph even under a caller's no_grad()
        scores = select_targets(output, target)
        _check_scalar_scores(scores, target)
        if not scores.requires_grad:
            raise ValueError("the selected output does not depend on the `layer`: pick a layer the forward uses")
        grads = torch.autograd.grad(scores.sum(), wrt, **(grad_kwargs or {}))
    result, offset = [], 0
    for idx in range(len(layers)):
        count = len(saved[idx])
        evals = tuple(t.detach() for t in saved[idx])
        result.append((evals, tuple(g.detach() for g in grads[offset : offset + count])))
        offset += count
    return result


class _FastLayer:
    """The engine's explained forward for one layer of a module, used when a call allows it (see the module doc)."""

    def __init__(self, forward_func: Any, layer: Any) -> None:
        self.module = _module_of(forward_func)
        self._forward: ExplainedForward | None = None
        if self.module is not None and isinstance(layer, nn.Module):
            name = next((n for n, m in self.module.named_modules() if m is layer), None)
            if name is not None:
                self._forward = ExplainedForward(self.module, [name])

    def run(
        self,
        inputs: tuple[Tensor, ...],
        target: TargetType,
        extra_args: tuple[Any, ...],
        attribute_to_layer_input: bool,
        grad_kwargs: dict[str, Any] | None,
    ) -> tuple[Tensor, Tensor] | None:
        """``(activations, grads)`` of the layer output, or ``None`` when this call needs the general path."""
        if self._forward is None or extra_args or attribute_to_layer_input or grad_kwargs or len(inputs) != 1:
            return None
        x = inputs[0]
        batch = x.shape[0] if x.ndim else 0
        classes = _class_list(target, batch)
        if classes is None or self._forward.copy_unavailable(x) is not None or self._forward.unavailable() is not None:
            return None
        fwd = self._forward.run(x, class_idx=classes, gradients=True, on_copy=True)
        return fwd.activations[0], fwd.grads[0]  # type: ignore[index]


def _class_list(target: TargetType, batch: int) -> list[int] | None:
    """Class-index targets (non-negative) as one class per sample; ``None`` for any other form."""
    if isinstance(target, Tensor) and not target.is_floating_point() and target.ndim <= 1:
        target = int(target.item()) if target.numel() == 1 else target.tolist()
    if _is_int(target) or (isinstance(target, list) and target and all(_is_int(t) for t in target)):
        if (target if _is_int(target) else min(target)) < 0:  # type: ignore[type-var,operator]
            return None
        try:
            return class_indices(target, batch)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None


# -- attribution classes ---------------------------------------------------------------------------------------------
class LayerAttribution:
    """Captum's ``LayerAttribution`` helpers (the static :meth:`interpolate`)."""

    @staticmethod
    def interpolate(
        layer_attribution: Tensor,
        interpolate_dims: int | tuple[int, ...],
        interpolate_mode: str = "nearest",
    ) -> Tensor:
        """Resize layer attributions to ``interpolate_dims`` (``F.interpolate``, as Captum).

        Args:
            layer_attribution: ``(N, C, *S)`` attributions.
            interpolate_dims: the size ``S_out`` (an int for every spatial dim, or one per dim).
            interpolate_mode: ``"nearest"``, ``"area"``, ``"linear"``, ``"bilinear"``, ``"bicubic"``,
                ``"trilinear"`` (must fit the number of spatial dims).

        Returns:
            ``(N, C, *S_out)`` attributions.

        Raises:
            TypeError: ``layer_attribution`` is not a tensor.
            ValueError: fewer than 3 dims.

        """
        if not isinstance(layer_attribution, Tensor):
            raise TypeError(f"`layer_attribution` must be a tensor, got {type(layer_attribution).__name__}")
        if layer_attribution.ndim < 3:
            raise ValueError(
                f"`layer_attribution` must be (N, C, *spatial), got shape {tuple(layer_attribution.shape)}"
            )
        return F.interpolate(layer_attribution, interpolate_dims, mode=interpolate_mode)


class _LayerMethod(LayerAttribution):
    """A layer method of a forward function (shared by the layer classes)."""

    def __init__(self, forward_func: Callable[..., Any], layer: Any, device_ids: list[int] | None = None) -> None:
        if not callable(forward_func):
            raise TypeError(
                f"`forward_func` must be callable (a model or a function), got {type(forward_func).__name__}"
            )
        _check_layers(layer)
        self.forward_func = forward_func
        self.layer = layer
        self.device_ids = device_ids
        self._fast = _FastLayer(forward_func, layer)

    def _evals_and_grads(
        self,
        inputs: Inputs,
        target: TargetType,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_kwargs: dict[str, Any] | None,
    ) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
        items, extra = _input_tuple(inputs), _extra_args(additional_forward_args)
        fast = self._fast.run(items, target, extra, attribute_to_layer_input, grad_kwargs)
        if fast is not None:
            return [((fast[0],), (fast[1],))]
        layers = self.layer if isinstance(self.layer, list) else [self.layer]
        return layer_evals_and_grads(
            self.forward_func, layers, items, target, extra, attribute_to_layer_input, grad_kwargs
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the method multiplies by the layer activations (Captum's property)."""
        return False


def _output(values: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """Captum's ``_format_output(len(values) > 1, values)``: a tuple only for several tensors."""
    return values if len(values) > 1 else values[0]


class LayerGradCam(_LayerMethod):
    r"""Captum's ``LayerGradCam``: ``sum_c mean_S(dY/dA_c) * A_c`` at the layer's resolution, signed by default.

    Args:
        forward_func: the model, or a function of the inputs returning the outputs.
        layer: the module to attribute to (its output, or its input with ``attribute_to_layer_input``).
        device_ids: accepted for Captum compatibility and ignored.

    """

    def __init__(self, forward_func: Callable[..., Any], layer: nn.Module, device_ids: list[int] | None = None) -> None:
        if not isinstance(layer, nn.Module):
            raise TypeError(f"`layer` must be an nn.Module, got {type(layer).__name__}")
        super().__init__(forward_func, layer, device_ids)

    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        attr_dim_summation: bool = True,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor | tuple[Tensor, ...]:
        """Grad-CAM attributions of the layer.

        Args:
            inputs: a tensor ``(N, ...)`` or a tuple of them (the forward's positional inputs).
            target: which output to explain (see :func:`select_targets`); ``None`` for one scalar per sample.
            additional_forward_args: further positional arguments of the forward (not attributed).
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            relu_attributions: clamp negative attributions (the original Grad-CAM).
            attr_dim_summation: sum over dim 1 (channels); ``False`` gives per-channel maps.
            grad_kwargs: keyword arguments for ``torch.autograd.grad``.

        Returns:
            ``(N, 1, *S)`` (or ``(N, C, *S)`` without summation) per layer tensor, in the layer's dtype; a tuple when
            the layer's output (input) holds several tensors. Tensors with no spatial dims use the gradient itself
            as the weight.

        """
        ((evals, grads),) = self._evals_and_grads(
            inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        results = []
        for act, grad in zip(evals, grads, strict=True):
            fused = attr_dim_summation and grad.ndim in (3, 4, 5) and act.dtype == grad.dtype
            if fused:  # one fused weights + channel-sum op
                cam = ops.cam_step(ops.gradcam_weights(grad), act, relu=relu_attributions, normalize=False)
                results.append(cam.unsqueeze(1))
                continue
            weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True) if grad.ndim > 2 else grad
            scaled = weights * act
            if attr_dim_summation:
                scaled = scaled.sum(dim=1, keepdim=True)
            results.append(F.relu(scaled) if relu_attributions else scaled)
        return _output(tuple(results))


class LayerGradientXActivation(_LayerMethod):
    """Captum's ``LayerGradientXActivation``: ``dY/dA * A`` element-wise (or ``dY/dA`` without multiplying).

    Args:
        forward_func: the model, or a function of the inputs returning the outputs.
        layer: the module (or a list of modules: a list of results) to attribute to.
        device_ids: accepted for Captum compatibility and ignored.
        multiply_by_inputs: multiply the gradients by the layer activations.
        memory_efficient: accepted for Captum compatibility (results are always detached).

    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module | list[nn.Module],
        device_ids: list[int] | None = None,
        multiply_by_inputs: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(forward_func, layer, device_ids)
        self._multiply_by_inputs = bool(multiply_by_inputs)
        self._memory_efficient = memory_efficient

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether the gradients are multiplied by the layer activations."""
        return self._multiply_by_inputs

    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict[str, Any] | None = None,
    ) -> Tensor | tuple[Tensor, ...] | list[Tensor | tuple[Tensor, ...]]:
        """Gradient x activation of the layer (arguments as :meth:`LayerGradCam.attribute`).

        Returns:
            the layer's ``(N, C, *S)`` attributions (a tuple for several tensors), or a list of those when ``layer``
            is a list.

        """
        per_layer = self._evals_and_grads(
            inputs, target, additional_forward_args, attribute_to_layer_input, grad_kwargs
        )
        results = [
            _output(tuple(g * a if self._multiply_by_inputs else g for a, g in zip(evals, grads, strict=True)))
            for evals, grads in per_layer
        ]
        return results if isinstance(self.layer, list) else results[0]


class _ModifiedReluGradients:
    """Input gradients with every ``nn.ReLU`` of the model under a backward rule (shared by the two classes)."""

    _rule: str

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"`model` must be an nn.Module (its nn.ReLU modules are hooked), got {type(model).__name__}"
            )
        self.model = model
        self.forward_func = model

    @property
    def multiplies_by_inputs(self) -> bool:
        """Captum's property (these methods do not multiply by the inputs)."""
        return False

    def attribute(
        self, inputs: Inputs, target: TargetType = None, additional_forward_args: Any = None
    ) -> Tensor | tuple[Tensor, ...]:
        """Input gradients of the target scores with the modified ReLU backward.

        Args:
            inputs: a tensor ``(N, ...)`` or a tuple of them.
            target: which output to explain (see :func:`select_targets`).
            additional_forward_args: further positional arguments of the forward.

        Returns:
            one gradient per input with its shape and dtype; a tuple when ``inputs`` is a tuple.

        """
        items = _input_tuple(inputs)

        def select(output: Any) -> Tensor:
            scores = select_targets(output, target)
            _check_scalar_scores(scores, target)
            return scores

        grads = rule_input_gradients(
            self.model, items, select, self._rule, extra_args=_extra_args(additional_forward_args)
        )
        return grads if isinstance(inputs, tuple) else grads[0]


class GuidedBackprop(_ModifiedReluGradients):
    """Captum's ``GuidedBackprop``: each ``nn.ReLU`` passes back ``g * [g > 0] * [x > 0]``.

    Args:
        model: the model (never modified: its ReLU modules are hooked during :meth:`attribute` only).

    """

    _rule = "guided"


class Deconvolution(_ModifiedReluGradients):
    """Captum's ``Deconvolution``: each ``nn.ReLU`` passes back ``g * [g > 0]`` (whatever the sign of its input).

    Args:
        model: the model (never modified: its ReLU modules are hooked during :meth:`attribute` only).

    """

    _rule = "deconv"


class GuidedGradCam:
    """Captum's ``GuidedGradCam``: guided backpropagation times Grad-CAM (ReLU'd) resized to each input.

    Args:
        model: the model.
        layer: the module for the Grad-CAM part (a single-tensor output or input).
        device_ids: accepted for Captum compatibility and ignored.

    """

    def __init__(self, model: nn.Module, layer: nn.Module, device_ids: list[int] | None = None) -> None:
        self.grad_cam = LayerGradCam(model, layer, device_ids)
        self.guided_backprop = GuidedBackprop(model)
        self.model, self.layer, self.device_ids = model, layer, device_ids

    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Any = None,
        interpolate_mode: str = "nearest",
        attribute_to_layer_input: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        """``GuidedBackprop(x) * interpolate(ReLU(GradCAM), x.shape[2:], interpolate_mode)`` per input.

        An input whose shape the map cannot be resized to (e.g. no spatial dims) gets an empty tensor and a
        warning, as Captum.

        Returns:
            one attribution per input with its shape; a tuple when ``inputs`` is a tuple.

        Raises:
            ValueError: a layer with several output (input) tensors.

        """
        items = _input_tuple(inputs)
        cam = self.grad_cam.attribute(
            items, target, additional_forward_args, attribute_to_layer_input, relu_attributions=True
        )
        if isinstance(cam, tuple):
            raise ValueError("GuidedGradCam needs a `layer` with a single output (input) tensor")
        guided = self.guided_backprop.attribute(items, target, additional_forward_args)
        results = []
        for x, grad in zip(items, guided, strict=True):
            try:
                results.append(grad * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode))
            except (RuntimeError, ValueError, NotImplementedError):
                warnings.warn(
                    f"could not resize the Grad-CAM map to an input of shape {tuple(x.shape)}: its attribution is an "
                    "empty tensor",
                    stacklevel=2,
                )
                results.append(torch.empty(0))
        return tuple(results) if isinstance(inputs, tuple) else results[0]


# -- the original function -------------------------------------------------------------------------------------------
class _SignedGradCAM(methods.GradCAM):
    """Grad-CAM without the final ReLU (Captum's ``relu_attributions=False``)."""

    spec = replace(methods.GradCAM.spec, relu=False)


def _class_indices(target: int | Sequence[int] | Tensor, batch: int) -> list[int]:
    """Captum's ``target`` (an int, or one int per sample as a list or 1-D tensor) as one class per sample.

    Raises:
        TypeError: another kind of target (use :class:`LayerGradCam` for tuple targets).
        ValueError: per-sample targets whose length is not the batch size.

    """
    if isinstance(target, tuple):
        raise TypeError("`target` must be an int, a list of ints or a 1-D tensor of class indices (one per sample)")
    try:
        return class_indices(target, batch)
    except TypeError as exc:
        raise TypeError(f"`target`: {exc}") from exc


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
    only the tail after ``layer`` and leaves parameter ``.grad`` untouched. :class:`LayerGradCam` is the full
    Captum-compatible class.

    Args:
        model: a classifier returning ``(N, K)`` scores.
        layer: the submodule to attribute to.
        inputs: ``(N, C, *S_in)`` batch.
        target: the class: one int, or one per sample (list or 1-D tensor).
        relu_attributions: clamp negative values, as Captum's option.

    Returns:
        ``(N, 1, *S)`` attributions in the layer output's dtype.

    """
    cls = methods.GradCAM if relu_attributions else _SignedGradCAM
    with cls(model, layer) as extractor, torch.enable_grad():
        scores = model(inputs.detach().requires_grad_(True))
        class_idx = _class_indices(target, inputs.shape[0])
        return extractor(class_idx, scores, normalized=False)[0].unsqueeze(1)
