"""Guided backpropagation and deconvnet: the ReLU backward replaced by a rule, without touching the user's model.

The one implementation of the modified ReLU backward that every front-end shares (Captum's ``GuidedBackprop`` /
``Deconvolution`` / ``GuidedGradCam``, pytorch-grad-cam's ``GuidedBackpropReLUModel``). With ``g`` the gradient
arriving at a ReLU's output and ``x`` its input, the gradient it passes to ``x`` is:

- ``"guided"`` (guided backpropagation, Springenberg et al. 2015): ``g * [g > 0] * [x > 0]``;
- ``"deconv"`` (deconvnet, Zeiler & Fergus 2014): ``g * [g > 0]`` (the input's sign is ignored);
- a plain ReLU passes ``g * [x > 0]``.

API:

- :func:`relu_with_rule` ``(x, rule) -> relu(x)`` whose backward follows ``rule`` (functional form, for models that
  call ``F.relu`` and want the rule: call it instead);
- :func:`modified_relu_backward` ``(model, rule)``: a context manager under which every ``nn.ReLU`` module of
  ``model`` (every call of it, ``inplace=True`` ones included) back-propagates with ``rule``. It works through a
  forward pre-hook and a forward hook per module, removed on every exit path (exceptions included); the model's
  modules, parameters and ``inplace`` flags are never changed. Functional ReLUs (``F.relu``, ``torch.relu``,
  ``Tensor.relu_``) are left alone, as Captum 0.9 and pytorch-grad-cam 1.5.7 do;
- :func:`rule_input_gradients` ``(model, inputs, select, rule)``: the gradients of the selected scores with respect to
  the inputs under the rule (what ``GuidedBackprop.attribute`` and ``GuidedBackpropReLUModel.__call__`` compute).

Inside the context the rule only changes what a backward pass computes; forward values are the usual ReLU outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RELU_RULES", "modified_relu_backward", "relu_with_rule", "rule_input_gradients"]

#: the ReLU backward rules: ``"guided"`` (``g * [g > 0] * [x > 0]``) and ``"deconv"`` (``g * [g > 0]``)
RELU_RULES = ("guided", "deconv")


class _GuidedReLU(torch.autograd.Function):
    """``relu(x)``; backward ``g * [g > 0] * [x > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return torch.where((grad > 0) & (out > 0), grad, torch.zeros_like(grad))


class _DeconvReLU(torch.autograd.Function):
    """``relu(x)``; backward ``g * [g > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp_min(0)


_FUNCTIONS: dict[str, type[torch.autograd.Function]] = {"guided": _GuidedReLU, "deconv": _DeconvReLU}


def _check_rule(rule: Any) -> str:
    if rule not in RELU_RULES:
        raise ValueError(f"`rule` must be one of {RELU_RULES}, got {rule!r}")
    return rule


def relu_with_rule(x: Tensor, rule: str = "guided") -> Tensor:
    """``relu(x)`` whose backward follows ``rule``.

    Args:
        x: any tensor.
        rule: ``"guided"`` or ``"deconv"`` (see the module docstring).

    Returns:
        ``relu(x)``, same shape and dtype (a new tensor; ``x`` is not modified).

    Raises:
        ValueError: an unknown rule.

    """
    return _FUNCTIONS[_check_rule(rule)].apply(x)  # type: ignore[no-any-return]


@contextmanager
def modified_relu_backward(model: nn.Module, rule: str = "guided") -> Iterator[list[nn.Module]]:
    """Make every ``nn.ReLU`` module of ``model`` back-propagate with ``rule`` inside the ``with`` block.

    Each call of a hooked ReLU keeps its input (a pre-hook; an ``inplace`` ReLU then runs on a copy so the input
    survives) and its output is replaced by :func:`relu_with_rule` of that input (same values). The hooks are removed
    when the block exits, whatever the exit.

    Args:
        model: the model (not modified).
        rule: ``"guided"`` or ``"deconv"``.

    Yields:
        the hooked ReLU modules.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown rule.

    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module (its nn.ReLU modules are hooked), got {type(model).__name__}")
    function = _FUNCTIONS[_check_rule(rule)]
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    pending: dict[int, list[Tensor]] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        x = args[0]
        pending.setdefault(id(module), []).append(x)
        if getattr(module, "inplace", False):
            return (x.clone(), *args[1:])
        return None

    def hook(module: nn.Module, _args: tuple[Any, ...], _output: Any) -> Tensor:
        return function.apply(pending[id(module)].pop())  # type: ignore[no-any-return]

    handles = []
    try:
        for module in relus:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
        yield relus
    finally:
        for handle in handles:
            handle.remove()
        pending.clear()


def rule_input_gradients(
    model: nn.Module,
    inputs: Sequence[Tensor],
    select: Callable[[Any], Tensor],
    rule: str = "guided",
    *,
    forward: Callable[..., Any] | None = None,
    extra_args: Sequence[Any] = (),
) -> tuple[Tensor, ...]:
    """Gradients of the selected scores with respect to the inputs, every ``nn.ReLU`` of ``model`` under ``rule``.

    ``d sum(select(forward(*inputs, *extra_args))) / d inputs``. The inputs are detached copies (the caller's tensors
    keep their ``requires_grad``); parameter ``.grad`` is never touched; the model's mode is left as it is.

    Args:
        model: the model whose ``nn.ReLU`` modules get the rule.
        inputs: ``(N, ...)`` input tensors (floating point).
        select: maps the forward's output to the scores to differentiate (any shape; they are summed).
        rule: ``"guided"`` or ``"deconv"``.
        forward: the function to run (default: ``model``).
        extra_args: further positional arguments after the inputs (no gradients).

    Returns:
        one gradient per input, each with its input's shape and dtype.

    Raises:
        ValueError: an unknown rule, or scores that do not depend on the inputs.

    """
    leaves = tuple(x.detach().requires_grad_(True) for x in inputs)
    with modified_relu_backward(model, rule), torch.enable_grad():
        output = (forward or model)(*leaves, *extra_args)
        scores = select(output)
        try:
            grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
        except RuntimeError as exc:
            raise ValueError(f"the selected scores do not depend on the inputs ({exc})") from exc
    return tuple(torch.zeros_like(x) if g is None else g.detach() for x, g in zip(leaves, grads, strict=True))
