"""The explained forward shared by the Explainer and the drop-in layers: tail-only, closed-form gradients, fast copy.

A call takes one of two routes (the caller decides which with :meth:`ExplainedForward.unavailable` and
:meth:`ExplainedForward.copy_unavailable`, and takes its own exact path when the first says so):

1. **optimised copy** (``on_copy=True``): the private :class:`~.private_copy.FastModel` (eval mode, frozen
   parameters, conv-batchnorm pairs folded except the target layers, channels-last, no hooks) runs the forward.
   Requires a 4-D input, every module in eval mode and no hooks on the model other than CAM libraries' own recorders
   (the copy would not run them). It is kept in step with the model's parameters (:func:`parameter_versions`).
2. **the model itself, tail only** (``on_copy=False``): the user's model runs the forward without recording up to the
   first target layer (:func:`~.tail_forward.tail_forward`); same arithmetic as a plain forward. With hooks on the
   model (other than CAM libraries' own), the gradients always come from tail autograd.

Gradients come in **closed form** (no autograd at all) when every target layer's tail is ``global average pool ->
flatten -> Linear`` and the explained score is one logit per sample (class indices, or the top class):
``dY_c / dA_k(i, j) = W[c, k] / (h * w)``; otherwise by **tail-only autograd** (callable targets, a non-linear head).
``path`` says which: :data:`CLOSED_FORM`, :data:`TAIL_AUTOGRAD` or :data:`NO_GRAD` (gradient-free methods).

With ``precision="bf16"|"fp16"`` the forward (and the tail's backward) run under autocast; activations, gradients and
outputs are returned in fp32, so the CAM math is fp32.

Accuracy of the copy: folding and channels-last convolutions reorder the fp32 arithmetic (~1e-6 relative on the
activations). Weighted-sum maps then move by a few 1e-6 (up to ~6e-5 where a map is nearly flat: the size of
the variation of the model's own arithmetic between 1 and 2 threads); principal-component projections and FEM's
threshold amplify it, so the drop-in layers keep those on route 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..targets import OutputTarget, check_class_range, select_scores
from .private_copy import FastModel, check_precision, foreign_hooks, forward_context
from .tail import LinearHead, linear_head, linear_head_grads, split_tail
from .tail_forward import tail_forward

__all__ = [
    "CLOSED_FORM",
    "NO_GRAD",
    "TAIL_AUTOGRAD",
    "ExplainedForward",
    "ForwardResult",
    "argmax_classes",
    "default_classes",
]

#: how a call computed its gradients
CLOSED_FORM, TAIL_AUTOGRAD, NO_GRAD = "closed_form", "tail_autograd", "no_grad"


@dataclass
class ForwardResult:
    """One explained forward.

    Attributes:
        outputs: the model output (no autograd graph; fp32 under autocast).
        activations: one contiguous ``(N, C, *S)`` output per target layer.
        grads: the explained scores' gradients, same shapes (``None`` for gradient-free calls).
        class_idx: the explained class of each sample for class-based calls (``None`` with ``targets``).
        path: :data:`CLOSED_FORM`, :data:`TAIL_AUTOGRAD` or :data:`NO_GRAD`.
        on_copy: whether the optimised copy ran (else the user's model).
        modified_in_place: whether a target layer's output was modified in place after the layer (see
            :class:`~.tail_forward.TailForward`).

    """

    outputs: Any
    activations: list[Tensor]
    grads: list[Tensor] | None
    class_idx: list[int] | None
    path: str
    on_copy: bool
    modified_in_place: bool = False


@dataclass
class _Network:
    """A network the forward runs: its target modules and their linear heads (``None`` where the tail is not one).

    ``split_reason`` says why a target's tail could not be isolated (then no head is known); ``None`` when they all
    were.
    """

    module: nn.Module
    targets: list[nn.Module]
    heads: list[LinearHead | None]
    split_reason: str | None = None


class ExplainedForward:
    """The tail-only forwards of one explainer: the checks, the private copy and the closed-form heads.

    Args:
        model: the user's model (never modified).
        target_names: dotted names of the target layers in ``model``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast of the forward; results in fp32).

    """

    def __init__(self, model: nn.Module, target_names: list[str], precision: str = "fp32") -> None:
        self.model = model
        self.target_names = list(target_names)
        self.autocast_dtype = check_precision(precision)
        self._copy = FastModel(model, precision, channels_last=True, keep=self.target_names)
        self._own: tuple[tuple[int, ...], _Network] | None = None  # (structure key, network)
        self._copy_net: tuple[nn.Module, _Network] | None = None

    def reset(self) -> None:
        """Drop the private copy and the cached analysis of the model (the next call redoes both)."""
        self._copy.reset()
        self._own = self._copy_net = None

    @property
    def held_copy(self) -> nn.Module | None:
        """The private copy the last forward ran on, if one is held (one copy of the parameters), else ``None``."""
        return None if self._copy_net is None else self._copy_net[0]

    def unavailable(self) -> str | None:
        """Why the tail after a target layer cannot be isolated (torch.fx), or ``None``.

        Without an isolated tail there is no closed form and no check that a target runs once; the forward still
        records the tail only (the drop-in layers take their exact path instead).
        """
        return self._own_network().split_reason

    def linear_heads(self, on_copy: bool) -> list[LinearHead | None]:
        """Per target layer, its ``pool -> flatten -> Linear`` head on the network the forward runs (or ``None``)."""
        return self._network(on_copy).heads

    def closed_form(self, on_copy: bool, targets: list[OutputTarget] | None) -> bool:
        """Whether a class-based gradient forward (``targets=None``) gets its gradients in closed form."""
        net = self._network(on_copy)
        # a hook on the model could change what the traced head computes
        return targets is None and all(h is not None for h in net.heads) and (on_copy or not foreign_hooks(self.model))

    def copy_unavailable(self, inputs: Tensor) -> str | None:
        """Why a call cannot use the optimised copy (``None`` when it can).

        Args:
            inputs: the batch.

        """
        if inputs.ndim != 4:
            return "the input is not a 4-D (N, C, H, W) batch"
        if any(module.training for module in self.model.modules()):
            return "the model (or a submodule) is in training mode"
        foreign = foreign_hooks(self.model)
        if foreign:
            return f"the model has hooks (on {foreign}) that a private copy would not run"
        return None

    def _own_network(self) -> _Network:
        """The user's model set up for tail-only forwards (cached per module tree)."""
        key = _structure_key(self.model)
        if self._own is None or self._own[0] != key:
            self._own = (key, _setup(self.model, self.target_names))
        return self._own[1]

    def _network(self, on_copy: bool) -> _Network:
        if not on_copy:
            return self._own_network()
        module = self._copy.module  # rebuilt when the model's parameters changed
        if self._copy_net is None or self._copy_net[0] is not module:
            self._copy_net = (module, _setup(module, self.target_names))
        return self._copy_net[1]

    def run(
        self,
        inputs: Tensor,
        *,
        class_idx: list[int] | None = None,
        targets: list[OutputTarget] | None = None,
        gradients: bool,
        on_copy: bool,
        keep_graph: bool = False,
        need_classes: bool = True,
    ) -> ForwardResult:
        """Forward ``inputs`` tail-only; with ``gradients``, the explained scores' gradients too.

        Call it in eval mode (the copy always is) once :meth:`unavailable` (and, for ``on_copy``,
        :meth:`copy_unavailable`) returned ``None``.

        Args:
            inputs: ``(N, C, *S)`` batch on the model's device.
            class_idx: the class of each sample; with neither this nor ``targets``, each sample's top class.
            targets: instead of classes, one callable per sample mapping its output to a scalar.
            gradients: compute the gradients (gradient methods).
            on_copy: run the optimised copy rather than the user's model.
            keep_graph: return the activations as the tail's graph sees them and gradients connected to them
                (``create_graph``), for second-order methods; no closed form, no widening or copies.
            need_classes: without ``class_idx`` and ``targets``, the top classes are required (see
                :func:`default_classes`); ``False`` for callers that do not explain a class.

        Returns:
            the outputs, the contiguous activations and gradients of every target layer, and the path taken.

        Raises:
            ValueError: top-class selection on a non-classifier output, or a class index out of range.
            RuntimeError: an explained score that does not depend on a target layer.

        """
        net = self._network(on_copy)
        closed = gradients and not keep_graph and self.closed_form(on_copy, targets)
        inputs = inputs.detach()
        if on_copy:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with forward_context(inputs.device, self.autocast_dtype, inference=False):
            fwd = tail_forward(net.module, net.targets, inputs, record=gradients and not closed)
        outputs = self._widened(fwd.output)
        if targets is None:
            class_idx = default_classes(outputs, need_classes) if class_idx is None else list(class_idx)
            if class_idx is not None:
                check_class_range(class_idx, outputs.shape[1])
        acts = [self._widened(act).contiguous() for act in fwd.activations]
        if not gradients:
            return ForwardResult(_detached(outputs), acts, None, class_idx, NO_GRAD, on_copy, fwd.modified_in_place)
        if closed:
            index = torch.as_tensor(class_idx)
            grads = [
                linear_head_grads(head, index, act).contiguous() for head, act in zip(net.heads, acts, strict=True)
            ]  # type: ignore[arg-type]
            return ForwardResult(
                _detached(outputs), acts, grads, class_idx, CLOSED_FORM, on_copy, fwd.modified_in_place
            )
        with torch.enable_grad():  # the score selection joins the tail's graph even under a caller's no_grad()
            scores = select_scores(outputs, class_idx, targets)
        if keep_graph:
            graph_acts = fwd.graph_activations
            grads = fwd.all_grads(scores, create_graph=True)
            return ForwardResult(
                _detached(outputs), graph_acts, grads, class_idx, TAIL_AUTOGRAD, on_copy, fwd.modified_in_place
            )
        grads = [self._widened(grad).contiguous() for grad in fwd.all_grads(scores)]
        return ForwardResult(_detached(outputs), acts, grads, class_idx, TAIL_AUTOGRAD, on_copy, fwd.modified_in_place)

    def _widened(self, value: Any) -> Any:
        """fp16/bf16 results of an autocast forward in fp32 (the CAM math runs in fp32); anything else as is."""
        if self.autocast_dtype is not None and isinstance(value, Tensor) and value.dtype == self.autocast_dtype:
            return value.float()
        return value


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def _setup(module: nn.Module, names: list[str]) -> _Network:
    """``module`` set up for tail-only forwards at the layers ``names``: targets, heads, why a split failed."""
    targets = [module.get_submodule(name) for name in names]
    heads = []
    for name in names:
        split = split_tail(module, name, hooks=False)
        if split.tail is None:
            reason = split.reason or "the tail after a target layer cannot be isolated"
            return _Network(module, targets, [None] * len(names), reason)
        heads.append(linear_head(split.tail))
    return _Network(module, targets, heads)


def _structure_key(model: nn.Module) -> tuple[int, ...]:
    """Identity of the module tree and its parameters: changes when a module or a parameter is replaced."""
    return tuple(id(m) for m in model.modules()) + tuple(id(p) for p in model.parameters())


def default_classes(outputs: Any, needed: bool) -> list[int] | None:
    """The classes of a call without targets: each sample's top class (:func:`argmax_classes`).

    ``None`` where they are not ``needed`` (a class-agnostic method) and the output is not an ``(N, K)`` classifier
    output, e.g. Eigen-CAM of a segmentation model (pytorch-grad-cam computes an unused argmax there).
    """
    if not needed and not (isinstance(outputs, Tensor) and outputs.ndim == 2):
        return None
    return argmax_classes(outputs)


def argmax_classes(outputs: Any) -> list[int]:
    """Each sample's top class of an ``(N, K)`` output.

    Raises:
        ValueError: the output is not an ``(N, K)`` tensor.

    """
    if not isinstance(outputs, Tensor) or outputs.ndim != 2:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"explaining each sample's top class needs an (N, K) output, but the model returned {shape}: pass "
            "`targets`, callables mapping one sample's output to the scalar to explain (segmentation: "
            "[SemanticSegmentationTarget(c, mask)] * N)"
        )
    return outputs.argmax(dim=-1).tolist()
