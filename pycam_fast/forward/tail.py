"""The model tail after a target layer: a torch.fx graph that maps the layer's output to the model output.

``split_tail`` traces the model with the target module kept as one call, then copies every node that depends on the
target's output into a new graph whose single input is that output. The split is refused (``TailSplit.reason``
says why) when the tail reads anything computed before the target other than its output (a skip connection that
crosses the target layer), when the target is called more than once, or when the model cannot be traced.

``linear_head`` recognises the eval-mode tail ``global average pool -> flatten -> Linear`` whose derivative is the
closed form ``dY_c / dA_k(i, j) = W[c, k] / (h * w)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

__all__ = ["LinearHead", "TailSplit", "linear_head", "linear_head_grads", "split_tail"]


@dataclass
class TailSplit:
    """The result of :func:`split_tail`.

    Attributes:
        tail: the tail module ``A -> model output`` (shares the model's submodules), or ``None``.
        reason: why there is no tail (``None`` when there is one).

    """

    tail: fx.GraphModule | None
    reason: str | None = None


class _TargetLeafTracer(fx.Tracer):
    def __init__(self, target_name: str, hooks: bool = True) -> None:
        super().__init__()
        self._target_name = target_name
        self._hooks = hooks

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return qualname == self._target_name or super().is_leaf_module(module, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # without hooks: trace the module's own forward (its hooks are neither traced nor called with proxies)
        return super().call_module(m, forward if self._hooks else m.forward, args, kwargs)


def _descendants(graph: fx.Graph, root: fx.Node) -> set[fx.Node]:
    seen = {root}
    for node in graph.nodes:  # topological order
        if any(arg in seen for arg in node.all_input_nodes):
            seen.add(node)
    return seen


def split_tail(model: nn.Module, target_name: str, hooks: bool = True) -> TailSplit:
    """Split ``model`` after the module ``target_name``.

    Args:
        model: the model (not modified: the tail references its submodules).
        target_name: dotted name of the target module.
        hooks: trace through the module hooks of non-leaf modules (fx's default: they are called with proxies and
            traced into the graph); ``False`` traces the modules' ``forward`` only, so no hook runs.

    Returns:
        a :class:`TailSplit` whose ``tail(A)`` equals the model output for the target output ``A``.

    """
    try:
        graph = _TargetLeafTracer(target_name, hooks).trace(model)
    except Exception as exc:
        return TailSplit(None, f"the model is not traceable by torch.fx ({type(exc).__name__}: {exc})")
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == target_name]
    if len(calls) != 1:
        return TailSplit(None, f"target layer '{target_name}' is called {len(calls)} times in the traced graph")
    target = calls[0]
    inside = _descendants(graph, target)
    output = next(n for n in graph.nodes if n.op == "output")
    if output not in inside:
        return TailSplit(None, f"the model output does not depend on '{target_name}'")
    for node in inside - {target}:
        for arg in node.all_input_nodes:
            if arg not in inside and arg.op != "get_attr":
                return TailSplit(
                    None,
                    f"node '{node.name}' after '{target_name}' reads '{arg.name}', computed before it (a skip "
                    "connection crossing the target layer)",
                )
    tail_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {target: tail_graph.placeholder("activation")}
    for node in graph.nodes:
        if node is target or (node not in inside and node.op != "get_attr"):
            continue
        env[node] = tail_graph.node_copy(node, lambda n: env[n])
    tail = fx.GraphModule(model, tail_graph, class_name="Tail")
    return TailSplit(tail)


@dataclass
class LinearHead:
    """A tail ``global average pool -> flatten -> Linear``.

    Attributes:
        weight: ``(K, C)`` classifier weights (the model's own tensor, not a copy).

    """

    weight: Tensor


_IDENTITY_MODULES = (nn.Dropout, nn.Identity, nn.Flatten)
_FLATTEN_FUNCS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape", "squeeze"}


def _is_gap(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        mod = modules[node.target]
        size = getattr(mod, "output_size", None)
        return isinstance(mod, nn.AdaptiveAvgPool2d) and size in (1, (1, 1))
    if node.op == "call_function" and node.target is torch.nn.functional.adaptive_avg_pool2d:
        return node.args[1:2] in ((1,), ((1, 1),)) or node.kwargs.get("output_size") in (1, (1, 1))
    if node.op == "call_method" and node.target == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return tuple(dims) in ((2, 3), (-2, -1)) if isinstance(dims, (tuple, list)) else False
    return False


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _IDENTITY_MODULES)
    if node.op == "call_function":
        return node.target in _FLATTEN_FUNCS
    return node.op == "call_method" and node.target in _FLATTEN_METHODS


def linear_head(tail: fx.GraphModule | None) -> LinearHead | None:
    """Recognise a linear tail (pool, then flatten/identity modules, then one Linear producing the output).

    Only valid in eval mode (dropout is treated as the identity). Returns ``None`` for any other tail.
    """
    if tail is None:
        return None
    modules = dict(tail.named_modules())
    nodes = [n for n in tail.graph.nodes if n.op not in ("placeholder", "output")]
    if len(nodes) < 2 or not _is_gap(nodes[0], modules):
        return None
    last = nodes[-1]
    if last.op != "call_module" or not isinstance(modules[last.target], nn.Linear):
        return None
    chain = [nodes[0], *nodes[1:-1], last]
    for prev, node in itertools.pairwise(chain):
        if node.all_input_nodes != [prev]:
            return None
    if any(not _is_flatten(n, modules) for n in nodes[1:-1]):
        return None
    output = next(n for n in tail.graph.nodes if n.op == "output")
    if output.all_input_nodes != [last]:
        return None
    return LinearHead(modules[last.target].weight)


def linear_head_grads(head: LinearHead, class_idx: Tensor, activations: Tensor) -> Tensor:
    """Closed-form gradients ``dY_c / dA_k(i, j) = W[c, k] / (h * w)`` of a linear head.

    Args:
        head: the linear head.
        class_idx: ``(N,)`` explained class of each sample.
        activations: ``(N, C, h, w)`` target layer output (for the shape, device and dtype).

    Returns:
        ``(N, C, h, w)`` gradients (an expanded view).

    """
    spatial = activations.shape[2:].numel()
    weights = head.weight.detach()[class_idx.to(head.weight.device)].to(activations.device, activations.dtype)
    return (weights / spatial)[..., None, None].expand_as(activations)
