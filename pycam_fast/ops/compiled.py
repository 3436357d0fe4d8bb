"""The ``cpp`` (CPU tensors) and ``cuda`` (CUDA tensors) backends: the ``torch.ops.pycam_fast.*`` ops of ``_C``.

The extension defines the op schemas (``csrc/ops/ops.cpp``, equal to :mod:`pycam_fast.ops.schemas`) with CPU and,
when built with CUDA, CUDA kernels. Loading it never fails the ``pycam_fast`` import: a missing or mismatched build
warns once and both backends report why they are unavailable. The reference implementations are registered as the
ops' fakes so they trace under ``torch.compile``.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from . import reference
from .dispatch import BackendUnavailable, Impl, register_backend
from .schemas import CPU_ONLY_OPS, OP_NAMES

__all__ = ["build_info", "extension_error"]

_REBUILD = (
    "rebuild it with `pip install --no-build-isolation -e .` in the source tree (--no-build-isolation so it "
    "compiles against the installed torch; FORCE_CUDA=1 CUDA_HOME=/usr/local/cuda for the CUDA kernels)"
)
#: dtypes the kernels take (fp16/bf16 accumulate in fp32)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_extension() -> tuple[ModuleType | None, str | None]:
    try:
        from .. import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # missing, or built against another torch (undefined symbols)
        return None, f"pycam_fast._C could not be loaded ({exc}); {_REBUILD}"
    built = _C.build_info().get("torch_version")
    if built != torch.__version__:
        return None, f"pycam_fast._C was built against torch {built}, this is torch {torch.__version__}; {_REBUILD}"
    return _C, None


def _nmf_fake(v: Tensor, w: Tensor, h: Tensor, *_: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Shapes of :func:`reference.nmf` (whose iteration count depends on the data, so it cannot trace)."""
    return (
        torch.empty_like(w, memory_format=torch.contiguous_format),
        torch.empty_like(h),
        v.new_empty(v.shape[0], dtype=torch.int64),
    )


#: fake (meta) implementations that are not the reference itself
_FAKES = {"nmf": _nmf_fake}


def _defined_ops() -> tuple[str, ...]:
    """The ops of :data:`OP_NAMES` the loaded extension defines (a build from older sources lacks newer ones)."""
    return tuple(op for op in OP_NAMES if hasattr(torch.ops.pycam_fast, op))


_C, _ERROR = _load_extension()
if _ERROR is not None:
    warnings.warn(f"pycam_fast: compiled kernels unavailable, using the torch backend: {_ERROR}", stacklevel=2)
else:
    _DEFINED = _defined_ops()
    if len(_DEFINED) < len(OP_NAMES):
        _missing = sorted(set(OP_NAMES) - set(_DEFINED))
        warnings.warn(f"pycam_fast._C lacks the ops {_missing} (built from older sources; they run on the torch "
                      f"reference); {_REBUILD}", stacklevel=2)  # fmt: skip
    for _op in _DEFINED:
        torch.library.register_fake(f"pycam_fast::{_op}", _FAKES.get(_op, getattr(reference, _op)))


def extension_error() -> str | None:
    """Why the compiled extension is unavailable, or ``None`` when it loaded."""
    return _ERROR


def build_info() -> dict[str, Any]:
    """How ``pycam_fast._C`` was built.

    Returns:
        ``{"available": True, "cuda": bool, "cuda_version": str | None, "cuda_arch_list": str, "compiler": str,
        "torch_version": str, "ops": tuple, ...}``, or ``{"available": False, "error": str}``.

    """
    if _C is None:
        return {"available": False, "error": _ERROR}
    return {"available": True, **_C.build_info()}


# -- what the kernels take (everything else runs on the reference) -----------------------------------------------


def _bad_dtype(*tensors: Tensor | None) -> str | None:
    for t in tensors:
        if t is not None and t.dtype not in KERNEL_DTYPES:
            return f"dtype {t.dtype} (the kernels take float16/bfloat16/float32/float64)"
    return None


def _bad_rank(t: Tensor) -> str | None:
    return None if 3 <= t.dim() <= 5 else f"a {t.dim()}-D tensor (the kernels take (N, C, *S) with 1-3 spatial dims)"


def _cam_step_unsupported(weights: Tensor, activations: Tensor, *_: Any) -> str | None:
    if weights.dim() not in (2, activations.dim()):
        return f"{weights.dim()}-D weights for {activations.dim()}-D activations"
    return _bad_rank(activations) or _bad_dtype(weights, activations)


def _grads_unsupported(grads: Tensor, *_: Any) -> str | None:
    return _bad_rank(grads) or _bad_dtype(grads)


def _pair_unsupported(grads: Tensor, activations: Tensor, *_: Any) -> str | None:
    if grads.shape != activations.shape:
        return "gradients and activations of different shapes"
    return _grads_unsupported(grads) or _bad_dtype(activations)


def _masked_inputs_unsupported(activations: Tensor, inputs: Tensor, _start: int, _stop: int, noise: Tensor | None,
                               _scale: float, out_dtype: torch.dtype | None, *_: Any) -> str | None:  # fmt: skip
    if out_dtype is not None and out_dtype not in KERNEL_DTYPES:
        return f"out_dtype {out_dtype}"
    return _bad_rank(activations) or _bad_dtype(activations, inputs, noise)


def _overlay_unsupported(images: Tensor, *_: Any) -> str | None:
    ok = images.dtype == torch.uint8 or images.dtype in KERNEL_DTYPES
    return None if ok else f"images of dtype {images.dtype}"


def _nmf_unsupported(v: Tensor, *_: Any) -> str | None:
    return None if v.dtype in (torch.float32, torch.float64) else f"dtype {v.dtype} (the kernel takes float32/float64)"


_UNSUPPORTED = {
    "cam_step": _cam_step_unsupported,
    "gradcam_weights": _grads_unsupported,
    "xgradcam_weights": _pair_unsupported,
    "gradcampp_weights": _pair_unsupported,
    "gradcampp_weights_torchcam": _grads_unsupported,
    "masked_inputs": _masked_inputs_unsupported,
    "overlay": _overlay_unsupported,
    "nmf": _nmf_unsupported,
}


def _impls() -> dict[str, Impl]:
    if _C is None:
        raise BackendUnavailable(_ERROR or "pycam_fast._C is missing")
    return {op: Impl(getattr(torch.ops.pycam_fast, op), _UNSUPPORTED[op]) for op in _DEFINED}


def _nmf_on_host(v: Tensor, w: Tensor, h: Tensor, max_iter: int, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """``nmf`` of device tensors by the CPU kernel on host copies, results back on the device.

    Coordinate descent is a sequential loop of small products: on a GPU each component update is a few tiny
    launches (about 6 * 2K per iteration), so for DFF's matrices (C x N*h*w, a few hundred KB) the host loop wins,
    as pytorch-grad-cam's host solve does.
    """
    solved = torch.ops.pycam_fast.nmf(v.cpu(), w.cpu(), h.cpu(), max_iter, tol)
    return tuple(t.to(v.device) for t in solved)  # type: ignore[return-value]


def _load_cuda() -> dict[str, Impl]:
    impls = {op: impl for op, impl in _impls().items() if op not in CPU_ONLY_OPS}
    if "nmf" in _DEFINED:
        impls["nmf"] = Impl(_nmf_on_host, _nmf_unsupported)
    if not _C.build_info()["cuda"]:
        raise BackendUnavailable(f"pycam_fast._C was built without CUDA (no GPU visible at build time); {_REBUILD}")
    if not torch.cuda.is_available():
        raise BackendUnavailable("torch.cuda.is_available() is False (no GPU or driver)")
    return impls


register_backend("cpp", _impls, ("cpu",), "fused C++ kernels (CPU)")
register_backend("cuda", _load_cuda, ("cuda",), "fused CUDA kernels")
