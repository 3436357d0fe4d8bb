"""The ``triton`` backend: the launchers of ``pycam_fast.kernels`` as ``torch.ops.pycam_fast_triton.*`` ops.

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` is set before the backend is first loaded
(Triton's interpreter; how CI tests the kernels). The loader imports Triton and the launchers on first use, so
``import pycam_fast`` works without Triton, and defines each op from its schema (:mod:`pycam_fast.ops.schemas`):
the launcher as its CUDA kernel (and CPU kernel when interpreting), the reference as its fake, so ``torch.compile``
traces through it. ``overlay`` has no Triton kernel (a table lookup): it runs on the reference.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import reference
from .dispatch import BackendUnavailable, Impl, register_backend
from .schemas import SCHEMAS

__all__ = ["NAMESPACE", "interpreting", "register"]

NAMESPACE = "pycam_fast_triton"
_DESCRIPTION = "Triton kernels (CUDA; CPU under TRITON_INTERPRET=1)"
#: dtypes the kernels take: they accumulate in fp32, which would lose float64's precision
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: op -> the ``pycam_fast.kernels`` module holding its launcher
_LAUNCHERS = {
    "cam_step": "cam_step",
    "gradcam_weights": "grad_weights",
    "xgradcam_weights": "grad_weights",
    "gradcampp_weights": "grad_weights",
    "gradcampp_weights_torchcam": "grad_weights",
    "masked_inputs": "masked_inputs",
}
_LIBRARY: list[torch.library.Library] = []  # the defined ops live as long as this object


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (Triton kernels run on CPU tensors, slowly)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# -- what the kernels take (everything else runs on the reference) -----------------------------------------------


def _bad(*tensors: Tensor | None) -> str | None:
    for t in tensors:
        if t is not None and t.dtype not in _DTYPES:
            return f"dtype {t.dtype} (the Triton kernels take float16/bfloat16/float32)"
        if t is not None and t.numel() == 0:
            return "an empty tensor"
    return None


def _spatial(t: Tensor) -> str | None:
    return None if 3 <= t.ndim <= 5 else f"a {t.ndim}-D tensor (the kernels take (N, C, *S) with 1-3 spatial dims)"


def _cam_step_unsupported(weights: Tensor, activations: Tensor, _relu: bool, size: Any, *_: Any) -> str | None:
    padded = (*weights.shape, *(1,) * (activations.ndim - weights.ndim))
    try:
        if torch.broadcast_shapes(padded, activations.shape) != activations.shape:
            return "weights that do not broadcast to the activations"
    except RuntimeError:
        return "weights that do not broadcast to the activations"
    if size is not None and (len(size) != activations.ndim - 2 or 0 in size):
        return f"output_size {size}"
    return _spatial(activations) or _bad(weights, activations)


def _grads_unsupported(grads: Tensor, *rest: Any) -> str | None:
    tensors = [grads, *(t for t in rest if isinstance(t, Tensor))]
    if any(t.shape != grads.shape for t in tensors):
        return "gradients and activations of different shapes"
    return _spatial(grads) or _bad(*tensors)


def _masked_inputs_unsupported(activations: Tensor, inputs: Tensor, start: int, stop: int, noise: Tensor | None,
                               _scale: float, out_dtype: torch.dtype | None, *_: Any) -> str | None:  # fmt: skip
    if inputs.ndim != activations.ndim or inputs.shape[0] not in (1, activations.shape[0]):
        return f"inputs of shape {tuple(inputs.shape)} for activations of shape {tuple(activations.shape)}"
    if noise is not None and noise.shape != (stop - start, *inputs.shape[2:]):
        return f"noise of shape {tuple(noise.shape)}"
    if not 0 <= start < stop <= activations.shape[0] * activations.shape[1]:
        return f"the pair range [{start}, {stop})"
    if out_dtype is not None and out_dtype not in _DTYPES:
        return f"out_dtype {out_dtype}"
    return _spatial(activations) or _bad(activations, inputs, noise)


_UNSUPPORTED = {
    "cam_step": _cam_step_unsupported,
    "gradcam_weights": _grads_unsupported,
    "xgradcam_weights": _grads_unsupported,
    "gradcampp_weights": _grads_unsupported,
    "gradcampp_weights_torchcam": _grads_unsupported,
    "masked_inputs": _masked_inputs_unsupported,
}


def _with_schema_defaults(launcher: Callable[..., Tensor], schema: torch.FunctionSchema) -> Callable[..., Tensor]:
    """``launcher`` called with every schema argument, defaults included.

    The dispatcher drops trailing arguments equal to their defaults before it calls a Python kernel; they are put
    back here, so the launchers declare no defaults of their own.
    """
    defaults = [arg.default_value for arg in schema.arguments]

    def impl(*args: Any) -> Tensor:
        return launcher(*args, *defaults[len(args) :])

    return impl


def _define_ops() -> None:
    """Define ``pycam_fast_triton::<op>`` for every launcher (once per process)."""
    if _LIBRARY:
        return
    lib = torch.library.Library(NAMESPACE, "DEF")
    for op, module in _LAUNCHERS.items():
        launcher = getattr(importlib.import_module(f"pycam_fast.kernels.{module}"), op)
        lib.define(SCHEMAS[op])
        impl = _with_schema_defaults(launcher, getattr(getattr(torch.ops, NAMESPACE), op).default._schema)
        lib.impl(op, impl, "CUDA")
        if interpreting():
            lib.impl(op, impl, "CPU")
        torch.library.register_fake(f"{NAMESPACE}::{op}", getattr(reference, op), lib=lib)
    _LIBRARY.append(lib)


def _load() -> dict[str, Impl]:
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        raise BackendUnavailable(f"triton is not installed ({exc}); `pip install triton` (CUDA only)") from exc
    if not interpreting() and not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU, for testing)")
    _define_ops()
    ops = getattr(torch.ops, NAMESPACE)
    return {op: Impl(getattr(ops, op), _UNSUPPORTED[op]) for op in _LAUNCHERS}


def register() -> None:
    """(Re-)register the ``triton`` backend, reading ``TRITON_INTERPRET`` now for the device list."""
    register_backend("triton", _load, ("cuda", "cpu") if interpreting() else ("cuda",), _DESCRIPTION)


register()
