"""Compiled backends: ``cpp`` (CPU tensors) and ``cuda`` (CUDA tensors), both served by the ``pycam_fast._C`` extension.

The extension registers the ``torch.ops.pycam_fast.*`` operators (schemas in ``csrc/ops/ops.cpp``) with CPU and,
when built with CUDA, CUDA kernels. This module loads it without ever failing the ``pycam_fast`` import (a missing
or mismatched build warns once and the backends report why they are unavailable), registers fake implementations
so the ops trace under ``torch.compile``, and exposes thin wrappers with the signatures of
:mod:`pycam_fast.reference`. The wrappers promote dtypes like the reference and hand the cases the kernels do not
cover (``mode="nearest"``, explicit Smooth Grad-CAM++ moments, non-float dtypes, inputs that need autograd) to the
reference functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from . import reference
from .registry import BackendUnavailable, register_backend

__all__ = [
    "build_info",
    "cam_step",
    "extension_error",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
    "overlay",
    "xgradcam_weights",
]

_REBUILD = (
    "rebuild it with `CUDA_HOME=/usr/local/cuda pip install --no-build-isolation -e .` in the source tree "
    "(--no-build-isolation so it compiles against the installed torch)"
)
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _load_extension() -> tuple[ModuleType | None, str | None]:
    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # missing, or built against another torch (undefined symbols)
        return None, f"pycam_fast._C could not be loaded ({exc}); {_REBUILD}"
    built = _C.build_info().get("torch_version")
    if built != torch.__version__:
        return None, f"pycam_fast._C was built against torch {built}, this is torch {torch.__version__}; {_REBUILD}"
    return _C, None


_C, _ERROR = _load_extension()
if _ERROR is not None:
    warnings.warn(f"pycam_fast: compiled kernels unavailable, using the torch backend: {_ERROR}", stacklevel=2)


def extension_error() -> str | None:
    """Why the compiled extension is unavailable, or ``None`` when it loaded."""
    return _ERROR


def build_info() -> dict[str, Any]:
    """How ``pycam_fast._C`` was built.

    Returns:
        ``{"available": bool, "cuda": bool, "cuda_version": str | None, "cuda_arch_list": str, "compiler": str,
        "torch_version": str, "ops": tuple}``; only ``available`` and ``error`` when the extension is missing.

    """
    if _C is None:
        return {"available": False, "error": _ERROR}
    return {"available": True, **_C.build_info()}


# ----------------------------------------------------------------------------------------------------------------
# Fake (meta) implementations: output shapes/dtypes only, so torch.compile / FakeTensor tracing never runs a kernel.
# ----------------------------------------------------------------------------------------------------------------


def _register_fakes() -> None:
    lib = "pycam_fast::"

    @torch.library.register_fake(lib + "cam_step")
    def _cam_step_fake(
        weights: Tensor,
        activations: Tensor,
        relu: bool = True,
        output_size: Sequence[int] | None = None,
        normalize: bool = True,
        eps: float = reference.DEFAULT_EPS,
    ) -> Tensor:
        torch._check(weights.dtype == activations.dtype, lambda: "weights and activations must share a dtype")
        spatial = tuple(output_size) if output_size is not None else tuple(activations.shape[2:])
        return activations.new_empty((activations.shape[0], *spatial))

    def _weights_fake(grads: Tensor, *_: Any) -> Tensor:
        torch._check(grads.dim() >= 3, lambda: "grads must be (N, C, *S)")
        return grads.new_empty((grads.shape[0], grads.shape[1]))

    for name in ("gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"):
        torch.library.register_fake(lib + name, _weights_fake)

    @torch.library.register_fake(lib + "masked_inputs")
    def _masked_inputs_fake(
        activations: Tensor,
        inputs: Tensor,
        start: int,
        stop: int,
        noise: Tensor | None = None,
        scale: float = 1.0,
        out_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        eps: float = reference.DEFAULT_EPS,
    ) -> Tensor:
        shape = (stop - start, inputs.shape[1], *inputs.shape[2:])
        fmt = torch.contiguous_format
        if channels_last and inputs.dim() == 4:
            fmt = torch.channels_last
        elif channels_last and inputs.dim() == 5:
            fmt = torch.channels_last_3d
        return torch.empty(shape, dtype=out_dtype or inputs.dtype, device=inputs.device, memory_format=fmt)

    @torch.library.register_fake(lib + "overlay")
    def _overlay_fake(images: Tensor, cams: Tensor, table: Tensor) -> Tensor:
        torch._check(images.dim() == 4 and images.shape[1] == 3, lambda: "images must be (N, 3, H, W)")
        torch._check(cams.dim() == 3 and cams.shape[0] == images.shape[0], lambda: "cams must be (N, h, w)")
        return images.new_empty(images.shape, dtype=torch.uint8)


if _C is not None:
    _register_fakes()


# ----------------------------------------------------------------------------------------------------------------
# Wrappers with the reference signatures.
# ----------------------------------------------------------------------------------------------------------------


def _kernel_ok(*tensors: Tensor) -> bool:
    """Whether the kernels handle these tensors.

    They need float dtypes, no autograd, and the first tensor ``(N, C, *S)`` with 1-3 spatial dims.
    """
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return not grad and 3 <= tensors[0].dim() <= 5 and all(t.dtype in _KERNEL_DTYPES for t in tensors)


def _promote(*tensors: Tensor) -> list[Tensor]:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def cam_step(
    weights: Tensor,
    activations: Tensor,
    *,
    relu: bool = True,
    output_size: Sequence[int] | None = None,
    normalize: bool = True,
    eps: float = reference.DEFAULT_EPS,
) -> Tensor:
    """Fused CAM step: weighted channel nansum -> optional resize -> optional ReLU -> optional min-max.

    One read of the activations and one write of the output; the channel sum runs at feature resolution and the
    summed map is resized (exact, since the sum is linear), with min/max taken over the final map.

    Args:
        weights: ``(N, C)``, ``(1, C)`` or full-shape ``(N, C, *S)`` (LayerCAM) weights.
        activations: ``(N, C, *S)`` with 1-3 spatial dims.
        relu: clamp negative values.
        output_size: optional ``S_out`` (linear/bilinear/trilinear, ``align_corners=False``).
        normalize: per-sample min-max normalisation over the final map.
        eps: added to the range by the normalisation.

    Returns:
        ``(N, *S)`` or ``(N, *S_out)`` maps in the promoted dtype of the inputs.

    """
    if not _kernel_ok(activations, weights) or weights.dim() not in (2, activations.dim()):
        return reference.cam_step(
            weights, activations, relu=relu, output_size=output_size, normalize=normalize, eps=eps
        )
    weights, activations = _promote(weights, activations)
    size = None if output_size is None else [int(s) for s in output_size]
    return torch.ops.pycam_fast.cam_step(weights, activations, relu, size, normalize, float(eps))


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    if not _kernel_ok(grads):
        return reference.gradcam_weights(grads)
    return torch.ops.pycam_fast.gradcam_weights(grads)


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float = reference.DEFAULT_EPS) -> Tensor:
    """XGrad-CAM weights ``sum_S(g * A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    if not _kernel_ok(grads, activations) or grads.shape != activations.shape:
        return reference.xgradcam_weights(grads, activations, eps)
    return torch.ops.pycam_fast.xgradcam_weights(*_promote(grads, activations), float(eps))


def gradcampp_weights(
    grads: Tensor,
    activations: Tensor,
    eps: float = reference.DEFAULT_EPS,
    *,
    grads_sq: Tensor | None = None,
    grads_cube: Tensor | None = None,
) -> Tensor:
    """Grad-CAM++ weights, alpha and weights in one pass: ``w = sum_S(alpha * relu(g))``.

    ``alpha = g^2 / (2 g^2 + sum_S(A) g^3 + eps)`` where ``g^2 > 0``, else 0. Explicit moments (Smooth Grad-CAM++)
    go to the reference implementation.

    Args:
        grads: ``(N, C, *S)`` first derivatives.
        activations: ``(N, C, *S)`` activations.
        eps: added to the denominator.
        grads_sq: optional ``(N, C, *S)`` second-order term (default ``g^2``).
        grads_cube: optional ``(N, C, *S)`` third-order term (default ``g^3``).

    Returns:
        ``(N, C)`` weights.

    """
    if grads_sq is not None or grads_cube is not None or not _kernel_ok(grads, activations):
        return reference.gradcampp_weights(grads, activations, eps, grads_sq=grads_sq, grads_cube=grads_cube)
    if grads.shape != activations.shape:
        return reference.gradcampp_weights(grads, activations, eps)
    return torch.ops.pycam_fast.gradcampp_weights(*_promote(grads, activations), float(eps))


def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """TorchCAM 0.5 GradCAMpp weights ``sum_S(g^2 * relu(g))``: ``(N, C, *S) -> (N, C)``."""
    if not _kernel_ok(grads):
        return reference.gradcampp_weights_torchcam(grads)
    return torch.ops.pycam_fast.gradcampp_weights_torchcam(grads)


def masked_inputs(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    *,
    noise: Tensor | None = None,
    scale: float = 1.0,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    mode: str | None = None,
    eps: float = reference.DEFAULT_EPS,
) -> Tensor:
    """Score-CAM family masked inputs for flattened (sample, channel) pairs ``start <= j < stop``.

    ``out[j - start] = scale * (U(minmax(A[n, c])) + noise[j - start]) * inputs[n]`` with ``j = n * C + c``; the
    resized masks are computed on the fly, never materialised.

    Args:
        activations: ``(N, C, *S)``.
        inputs: ``(N, Cin, *S_in)`` or ``(1, Cin, *S_in)``.
        start: first flattened pair.
        stop: one past the last pair (``<= N * C``).
        noise: optional ``(stop - start, *S_in)`` additive mask noise (SSCAM).
        scale: multiplier (ISCAM).
        out_dtype: result dtype (default: the inputs'); fp32/fp16/bf16/fp64.
        channels_last: return a channels-last (2-D) / channels-last-3d (3-D) tensor.
        mode: interpolation mode; only the default (linear family) runs in the kernel.
        eps: added to each channel's range.

    Returns:
        ``(stop - start, Cin, *S_in)`` masked inputs.

    """
    tensors = (activations, inputs) if noise is None else (activations, inputs, noise)
    default_mode = activations.dim() in (3, 4, 5) and mode in (None, reference.interp_mode(activations.dim() - 2))
    out_ok = out_dtype is None or out_dtype in _KERNEL_DTYPES
    if not (default_mode and out_ok and _kernel_ok(*tensors)):
        return reference.masked_inputs(
            activations, inputs, start, stop, noise=noise, scale=scale, out_dtype=out_dtype,
            channels_last=channels_last, mode=mode, eps=eps,
        )  # fmt: skip
    out_dtype = out_dtype or inputs.dtype
    activations, inputs = _promote(activations, inputs)
    if noise is not None:
        noise = noise.to(activations.dtype)
    return torch.ops.pycam_fast.masked_inputs(
        activations, inputs, int(start), int(stop), noise, float(scale), out_dtype, bool(channels_last), float(eps)
    )


def overlay(images: Tensor, cams: Tensor, table: Tensor) -> Tensor:
    """Fused overlay (spec: :func:`pycam_fast.reference.overlay`): one pass, uint8 written once.

    Args:
        images: ``(N, 3, H, W)`` uint8, or float in ``[0, 1]``; any strides.
        cams: ``(N, h, w)`` float maps in ``[0, 1]``.
        table: ``(3, 65536)`` uint8 blend table on the images' device.

    Returns:
        ``(N, 3, H, W)`` uint8 overlays, bitwise equal to the reference.

    """
    if images.dtype not in (torch.uint8, *_KERNEL_DTYPES):
        return reference.overlay(images, cams, table)  # float8 images (maps of any float dtype are converted)
    return torch.ops.pycam_fast.overlay(images.detach(), cams.detach(), table)


def _ops(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        cam_step=cam_step,
        gradcam_weights=gradcam_weights,
        xgradcam_weights=xgradcam_weights,
        gradcampp_weights=gradcampp_weights,
        gradcampp_weights_torchcam=gradcampp_weights_torchcam,
        masked_inputs=masked_inputs,
        overlay=overlay,
    )


def _load_cpp() -> SimpleNamespace:
    if _C is None:
        raise BackendUnavailable(_ERROR or "pycam_fast._C is missing")
    return _ops("cpp")


def _load_cuda() -> SimpleNamespace:
    if _C is None:
        raise BackendUnavailable(_ERROR or "pycam_fast._C is missing")
    if not _C.build_info()["cuda"]:
        raise BackendUnavailable(f"pycam_fast._C was built without CUDA (nvcc not found at build time); {_REBUILD}")
    if not torch.cuda.is_available():
        raise BackendUnavailable("torch.cuda.is_available() is False (no GPU or driver)")
    return _ops("cuda")


register_backend("cpp", _load_cpp, ("cpu",), "fused C++ kernels (CPU)")
register_backend("cuda", _load_cuda, ("cuda",), "fused CUDA kernels")
