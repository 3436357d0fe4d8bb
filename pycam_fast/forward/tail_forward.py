"""Gradients of an explained score with respect to target layers' outputs, with an autograd graph of the tail only.

The layers before the first target run without recording (grad mode off); a forward hook on each target records its
output, and the first target to run turns its output into a graph leaf and switches grad mode on, so only the part
after it is recorded. Peak memory is that of an inference forward plus the tail's saved tensors. The hooks are
removed and the grad mode restored on every exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TailForward", "tail_forward"]


class TailForward:
    """The result of :func:`tail_forward`.

    Attributes:
        output: model output (attached to the tail's graph when ``record`` was set).
        activations: one ``(N, C, *S)`` output per target layer (detached).
        modified_in_place: whether the model modified a target layer's output in place after the layer (e.g. a
            following ``ReLU(inplace=True)``); hook-based recorders would then see the modified values.

    """

    def __init__(
        self,
        output: Any,
        activations: list[Tensor],
        graph_refs: list[Tensor] | None = None,
        modified_in_place: bool = False,
    ) -> None:
        self.output, self.activations = output, activations
        self._graph_refs = graph_refs
        self.modified_in_place = modified_in_place

    @property
    def activation(self) -> Tensor:
        """``(N, C, *S)`` output of the (first) target layer."""
        return self.activations[0]

    @property
    def graph_activations(self) -> list[Tensor]:
        """The target layers' outputs as the recorded graph sees them (what :meth:`all_grads` differentiates)."""
        if self._graph_refs is None:
            raise RuntimeError("graph activations need a forward with `record=True` (and not yet freed)")
        return list(self._graph_refs)

    def all_grads(self, score: Tensor, create_graph: bool = False) -> list[Tensor]:
        """``d score.sum() / d A_l`` for every target layer ``l``, each ``(N, C, *S)``.

        Args:
            score: the explained scores (any shape; summed).
            create_graph: keep the tail's graph and return gradients connected to :attr:`graph_activations`
                (second-order methods: Hessian-vector products); otherwise the graph is freed and the gradients
                are detached.

        Raises:
            RuntimeError: the forward did not record, or the score does not depend on a target layer.

        """
        if self._graph_refs is None:
            raise RuntimeError("gradients need a forward with `record=True`")
        refs = self._graph_refs
        try:
            with torch.enable_grad():  # the sum joins the graph even under a caller's no_grad()
                grads = torch.autograd.grad(score.sum(), refs, create_graph=create_graph)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the explained score is not connected to the target layer: pick a layer the output depends on ({exc})"
            ) from exc
        finally:
            if not create_graph:
                self._graph_refs = None
        return list(grads) if create_graph else [grad.detach() for grad in grads]

    def grads(self, score: Tensor) -> Tensor:
        """``d score.sum() / d activation``, ``(N, C, *S)`` (single target; frees the tail graph)."""
        return self.all_grads(score)[0]


def tail_forward(
    model: nn.Module, target: nn.Module | Sequence[nn.Module], inputs: Tensor, record: bool
) -> TailForward:
    """Forward ``inputs``; with ``record``, build an autograd graph for the part after the first target only.

    Args:
        model: the model (eval mode is the caller's business).
        target: the target layer, or several; each a submodule of ``model`` called once per forward.
        inputs: ``(N, *input_shape)``.
        record: record the graph after the first target (gradient methods); otherwise everything runs without grad.

    Returns:
        the output and the target layers' outputs (in the order of ``target``).

    Raises:
        TypeError: a target layer does not output a tensor.
        ValueError: a target layer is not called exactly once.

    """
    targets = [target] if isinstance(target, nn.Module) else list(target)
    seen: list[list[Tensor]] = [[] for _ in targets]
    refs: list[list[Tensor]] = [[] for _ in targets]
    passed_on: list[tuple[Tensor, int]] = []  # what each target handed to the rest of the model, and its version

    def _hook(_module: nn.Module, _inputs: Any, output: Any, idx: int) -> Any:
        if not isinstance(output, Tensor):
            raise TypeError(f"the target layer returned a {type(output).__name__}, not a tensor: choose another layer")
        seen[idx].append(output.detach())
        if not record:
            passed_on.append((output, output._version))
            return None
        if not (torch.is_grad_enabled() and output.requires_grad):
            # the first target (or one that does not depend on an earlier one): a leaf, then record from here on
            output = output.detach().requires_grad_()
            torch.set_grad_enabled(True)
        refs[idx].append(output)
        following = output.clone()  # in-place ops after the target must not touch the tensor the gradient is taken at
        passed_on.append((following, following._version))
        return following

    previous = torch.is_grad_enabled()
    handles = [
        module.register_forward_hook(lambda m, i, o, idx=idx: _hook(m, i, o, idx)) for idx, module in enumerate(targets)
    ]
    try:
        torch.set_grad_enabled(False)
        output = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(previous)
    if any(len(outputs) != 1 for outputs in seen):
        counts = [len(outputs) for outputs in seen]
        raise ValueError(f"target layers ran {counts} times in one forward: pick layers called exactly once")
    modified = any(tensor._version != version for tensor, version in passed_on)
    return TailForward(
        output, [outputs[0] for outputs in seen], [r[0] for r in refs] if record else None, modified_in_place=modified
    )
