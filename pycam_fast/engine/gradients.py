"""Gradients of an explained score with respect to a target layer's output, with an autograd graph of the tail only.

The layers before the target run without recording (grad mode off); a forward hook on the target turns its output
into a graph leaf and switches grad mode on, so only the tail after the target is recorded. Peak memory is that of
an inference forward plus the tail's saved tensors. The hook is removed and the grad mode restored on every exit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TailForward", "tail_forward"]


class TailForward:
    """The result of :func:`tail_forward`.

    Attributes:
        output: model output (attached to the tail's graph when ``record`` was set).
        activation: ``(N, C, *S)`` target layer output; a grad leaf when ``record`` was set.

    """

    def __init__(self, output: Any, activation: Tensor) -> None:
        self.output, self.activation = output, activation

    def grads(self, score: Tensor) -> Tensor:
        """``d score.sum() / d activation``, ``(N, C, *S)`` (frees the tail graph)."""
        try:
            (grad,) = torch.autograd.grad(score.sum(), self.activation)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the explained score is not connected to the target layer: pick a layer the output depends on ({exc})"
            ) from exc
        return grad


def tail_forward(model: nn.Module, target: nn.Module, inputs: Tensor, record: bool) -> TailForward:
    """Forward ``inputs``; with ``record``, build an autograd graph for the part after ``target`` only.

    Args:
        model: the model (eval mode is the caller's business).
        target: the target layer, a submodule of ``model`` called once per forward.
        inputs: ``(N, *input_shape)``.
        record: record the tail's graph (gradient methods); otherwise everything runs without grad.

    Returns:
        the output and the target layer's output.

    Raises:
        TypeError: the target layer does not output a tensor.
        ValueError: the target layer is not called exactly once.

    """
    seen: list[Tensor] = []

    def _hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not isinstance(output, Tensor):
            raise TypeError(f"the target layer returned a {type(output).__name__}, not a tensor: choose another layer")
        if not record:
            seen.append(output.detach())
            return None
        leaf = output.detach().requires_grad_()
        seen.append(leaf)
        torch.set_grad_enabled(True)
        return leaf.clone()  # in-place ops after the target must not touch the leaf

    previous = torch.is_grad_enabled()
    handle = target.register_forward_hook(_hook)
    try:
        torch.set_grad_enabled(False)
        output = model(inputs)
    finally:
        handle.remove()
        torch.set_grad_enabled(previous)
    if len(seen) != 1:
        raise ValueError(f"the target layer ran {len(seen)} times in one forward: pick a layer called exactly once")
    return TailForward(output, seen[0])
