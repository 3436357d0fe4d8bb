"""A private, inference-optimised copy of a model, kept in step with it (one staleness rule: parameter versions).

The copy is in eval mode with frozen parameters, conv-batchnorm pairs folded (torch.fx) when the model traces, no
module hooks, and optionally channels-last and ``torch.compile``d; forwards run under ``torch.inference_mode`` and,
for ``precision="bf16"|"fp16"``, ``torch.autocast``. The user's model is never modified. The copy is rebuilt whenever
:func:`parameter_versions` of the model changes (optimiser steps, ``load_state_dict``, in-place updates under
``no_grad``, ``.to()``); changes made through ``.data`` are not seen: call :meth:`FastModel.reset`.

A copy runs no hooks, so it only stands in for a model whose hooks are CAM libraries' own recorders
(:func:`foreign_hooks` lists the others; callers run the model itself when there are any).
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Collection
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .._log import log_once

__all__ = ["PRECISIONS", "FastModel", "check_precision", "foreign_hooks", "forward_context", "parameter_versions"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: packages whose recording hooks on a model are not part of its computation (left out of the private copy)
_OBSERVER_PACKAGES = ("pycam_fast.", "pytorch_grad_cam.", "torchcam.", "captum.")


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``None`` for fp32).

    Raises:
        ValueError: an unknown precision.

    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` pairs where the batchnorm is applied to the conv's output and nothing else reads it."""
    from torch import fx

    modules = dict(model.named_modules())
    pairs = []
    for node in fx.symbolic_trace(model).graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0]
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), (nn.Conv1d, nn.Conv2d, nn.Conv3d))
            and len(source.users) == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def _fold_conv_bn(model: nn.Module, keep: Collection[str] = ()) -> nn.Module:
    """Fold eval-mode conv -> batchnorm pairs in place, keeping the module tree (hooks by name still work).

    The conv becomes the fused conv and the batchnorm an ``nn.Identity``; a model that does not trace is left as is.
    Convs named in ``keep`` are not folded (their own output is observed, e.g. a CAM target layer).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        pairs = _conv_bn_pairs(model)
    except Exception as exc:
        log_once(f"pycam_fast: conv-batchnorm folding skipped ({type(exc).__name__}: {exc})")
        return model
    for conv_name, bn_name in pairs:
        if conv_name in keep:
            continue
        fused = fuse_conv_bn_eval(model.get_submodule(conv_name), model.get_submodule(bn_name))
        model.set_submodule(conv_name, fused)
        model.set_submodule(bn_name, nn.Identity())
    return model


class FastModel:
    """Inference-only private copy of ``model``, rebuilt when the model's parameters change.

    Args:
        model: the user's model (copied, never modified).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; outputs are returned in fp32).
        channels_last: convert the copy (and each input) to channels-last memory format (4-D inputs).
        fold_bn: fold conv-batchnorm pairs.
        compile: ``torch.compile`` the copy for one static batch size (the largest seen; smaller batches are padded
            with zeros, so the last chunk of a run does not recompile). CPU: Inductor with weight freezing; CUDA:
            CUDA graphs (``mode="reduce-overhead"``). Worth it for long runs only.
        keep: dotted names of convs whose output must stay as is (not folded with their batchnorm): target layers.

    """

    def __init__(
        self,
        model: nn.Module,
        precision: str = "fp32",
        channels_last: bool = False,
        fold_bn: bool = True,
        compile: bool = False,
        keep: Collection[str] = (),
    ) -> None:
        self.autocast_dtype = check_precision(precision)
        self.source = model
        self.channels_last = channels_last
        self._options = (fold_bn, compile, tuple(keep))
        self._module: nn.Module | None = None
        self._key: tuple[Any, ...] | None = None
        self._compiled: Any = None
        self._batch = 0

    @property
    def module(self) -> nn.Module:
        """The private copy, rebuilt first if the model's parameters or buffers changed since it was taken."""
        key = parameter_versions(self.source)
        if self._module is None or key != self._key:
            self.reset()  # free the stale copy before taking the new one
            self._module, self._key = self._build(), key
        return self._module

    def reset(self) -> None:
        """Drop the copy (after changing the weights through ``.data``, which :func:`parameter_versions` misses)."""
        self._module = self._key = self._compiled = None
        self._batch = 0

    def _build(self) -> nn.Module:
        fold_bn, compile_, keep = self._options
        private = _copy_without_hooks(self.source)
        private.eval()
        for param in private.parameters():
            param.requires_grad_(False)
        if fold_bn:
            private = _fold_conv_bn(private, keep)
        if self.channels_last:
            private = private.to(memory_format=torch.channels_last)
        if compile_:
            options = {"mode": "reduce-overhead"} if self.device.type == "cuda" else {"options": {"freezing": True}}
            self._compiled = torch.compile(private, dynamic=False, **options)
        return private

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a parameter-free model)."""
        param = next(iter(self.source.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    def context(self) -> AbstractContextManager[None]:
        """The context every forward runs in (inference mode, autocast when asked)."""
        return forward_context(self.device, self.autocast_dtype, inference=True)

    def __call__(self, inputs: Tensor) -> Tensor:
        """Forward ``inputs`` ``(M, *input_shape)``; returns the output in fp32 (or the model's wider dtype)."""
        module = self.module
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.context():
            out = self._compiled_forward(inputs) if self._compiled is not None else module(inputs)
        if isinstance(out, Tensor) and out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out

    def _compiled_forward(self, inputs: Tensor) -> Tensor:
        """The compiled forward at one static batch size: rows are padded with zeros and the padding dropped."""
        rows = inputs.shape[0]
        self._batch = max(self._batch, rows)
        pad = inputs.new_zeros((self._batch - rows, *inputs.shape[1:]))
        # Always a fresh tensor made here, under inference mode: the compiled graph guards on the input's dispatch
        # keys, and chunks made outside inference mode would otherwise recompile it once.
        inputs = torch.cat([inputs, pad.contiguous(memory_format=_format(inputs))])
        out = self._compiled(inputs)
        if not isinstance(out, Tensor):
            raise TypeError(f"`compile=True` needs a model that returns one tensor, got {type(out).__name__}")
        return out[:rows].clone() if self.device.type == "cuda" else out[:rows]


def _format(t: Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)
        else (torch.contiguous_format)
    )


#: the per-module hook dictionaries the copy leaves out
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _copy_without_hooks(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` whose modules have empty hook dictionaries (the hooks are not copied)."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if isinstance(hooks, dict):
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo)


def _module_hooks(model: nn.Module) -> list[tuple[str, Any]]:
    """``(module name, hook)`` for every forward, pre-forward and backward hook registered on ``model``'s modules."""
    found = []
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            hooks = getattr(module, attr, None) or {}
            found.extend((name, hook) for hook in hooks.values())
    return found


def foreign_hooks(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` with hooks other than CAM libraries' recording hooks (sorted)."""
    return sorted({name or "<model>" for name, hook in _module_hooks(model) if not _is_cam_observer(hook)})


def _is_cam_observer(hook: Any) -> bool:
    """Whether ``hook`` is a CAM library's recording hook (a method of one of its objects, possibly partial)."""
    func = hook.func if isinstance(hook, functools.partial) else hook
    owner = getattr(func, "__self__", None)
    return owner is not None and type(owner).__module__.startswith(_OBSERVER_PACKAGES)


def parameter_versions(model: nn.Module) -> tuple[tuple[int, int, int], ...]:
    """A cheap fingerprint of ``model``'s parameters and buffers: ``(id, version counter, data pointer)`` each.

    It changes when a tensor is modified in place through autograd-visible ops (optimiser steps,
    ``load_state_dict``, ``with torch.no_grad(): p.add_(...)``), replaced, or moved; NOT when it is modified through
    ``.data`` (``p.data.add_(...)`` bypasses the version counter).
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors)


@contextmanager
def forward_context(device: torch.device, dtype: torch.dtype | None, inference: bool) -> Any:
    """Autocast to ``dtype`` on ``device`` (none for fp32), under ``torch.inference_mode`` if ``inference``."""
    with ExitStack() as stack:
        if inference:
            stack.enter_context(torch.inference_mode())
        if dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        yield
