"""``torch.library`` custom ops wrapping the Triton kernels, so ``torch.compile`` traces through them.

Each op's default implementation (every device) is the :mod:`pycam_fast.reference` function; the Triton launcher is
registered for ``"cuda"`` only, and ``register_fake`` gives the output metadata for tracing. This is the pattern that
passes ``torch.library.opcheck`` and ``torch.compile`` on CPU as well as GPU: ``torch.library.triton_op`` would
route CPU tensors into the Triton launcher and break both.

Ops (namespace ``pycam_fast_triton``): ``cam_step``, ``gradcam_weights``, ``xgradcam_weights``,
``gradcampp_weights``, ``gradcampp_weights_torchcam``, ``masked_inputs``; the arguments are the reference
functions' arguments, all positional.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pycam_fast import reference

from . import cam_step as _cam_step
from . import grad_weights as _grad_weights
from . import masked_inputs as _masked_inputs

__all__ = [
    "cam_step",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
    "xgradcam_weights",
]

_NS = "pycam_fast_triton"


def _memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    if channels_last and spatial_dims == 2:
        return torch.channels_last
    if channels_last and spatial_dims == 3:
        return torch.channels_last_3d
    return torch.contiguous_format


# --- cam_step ---------------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{_NS}::cam_step", mutates_args=())
def cam_step(
    weights: Tensor, activations: Tensor, relu: bool, output_size: list[int] | None, normalize: bool, eps: float
) -> Tensor:
    """CAM step ``(N, C) | (1, C) | (N, C, *S), (N, C, *S) -> (N, *S_out)``; default: the reference."""
    return reference.cam_step(
        weights, activations, relu=relu, output_size=output_size, normalize=normalize, eps=eps
    ).contiguous()  # the fake (and the kernel) promise a contiguous map whatever the activations' layout


@cam_step.register_kernel("cuda")
def _cam_step_cuda(
    weights: Tensor, activations: Tensor, relu: bool, output_size: list[int] | None, normalize: bool, eps: float
) -> Tensor:
    return _cam_step.cam_step(weights, activations, relu=relu, output_size=output_size, normalize=normalize, eps=eps)


@cam_step.register_fake
def _cam_step_fake(
    weights: Tensor, activations: Tensor, relu: bool, output_size: list[int] | None, normalize: bool, eps: float
) -> Tensor:
    w_shape = tuple(weights.shape) + (1,) * (activations.ndim - weights.ndim)
    shape = torch.broadcast_shapes(w_shape, activations.shape)
    size = tuple(output_size) if output_size is not None else tuple(shape[2:])
    dtype = torch.promote_types(weights.dtype, activations.dtype)
    return activations.new_empty((shape[0], *size), dtype=dtype)


# --- channel weights --------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{_NS}::gradcam_weights", mutates_args=())
def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``(N, C, *S) -> (N, C)``; default: the reference."""
    return reference.gradcam_weights(grads).contiguous()


@gradcam_weights.register_kernel("cuda")
def _gradcam_weights_cuda(grads: Tensor) -> Tensor:
    return _grad_weights.gradcam_weights(grads)


@gradcam_weights.register_fake
def _gradcam_weights_fake(grads: Tensor) -> Tensor:
    return grads.new_empty(grads.shape[:2])


@torch.library.custom_op(f"{_NS}::xgradcam_weights", mutates_args=())
def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float) -> Tensor:
    """XGrad-CAM weights ``(N, C, *S) x2 -> (N, C)``; default: the reference."""
    return reference.xgradcam_weights(grads, activations, eps).contiguous()


@xgradcam_weights.register_kernel("cuda")
def _xgradcam_weights_cuda(grads: Tensor, activations: Tensor, eps: float) -> Tensor:
    return _grad_weights.xgradcam_weights(grads, activations, eps)


@xgradcam_weights.register_fake
def _xgradcam_weights_fake(grads: Tensor, activations: Tensor, eps: float) -> Tensor:
    return grads.new_empty(grads.shape[:2], dtype=torch.promote_types(grads.dtype, activations.dtype))


@torch.library.custom_op(f"{_NS}::gradcampp_weights", mutates_args=())
def gradcampp_weights(
    grads: Tensor, activations: Tensor, eps: float, grads_sq: Tensor | None, grads_cube: Tensor | None
) -> Tensor:
    """Grad-CAM++ weights ``(N, C, *S) x2 -> (N, C)``; default: the reference."""
    return reference.gradcampp_weights(grads, activations, eps, grads_sq=grads_sq, grads_cube=grads_cube).contiguous()


@gradcampp_weights.register_kernel("cuda")
def _gradcampp_weights_cuda(
    grads: Tensor, activations: Tensor, eps: float, grads_sq: Tensor | None, grads_cube: Tensor | None
) -> Tensor:
    return _grad_weights.gradcampp_weights(grads, activations, eps, grads_sq=grads_sq, grads_cube=grads_cube)


@gradcampp_weights.register_fake
def _gradcampp_weights_fake(
    grads: Tensor, activations: Tensor, eps: float, grads_sq: Tensor | None, grads_cube: Tensor | None
) -> Tensor:
    dtype = torch.promote_types(grads.dtype, activations.dtype)
    for extra in (grads_sq, grads_cube):
        if extra is not None:
            dtype = torch.promote_types(dtype, extra.dtype)
    return grads.new_empty(grads.shape[:2], dtype=dtype)


@torch.library.custom_op(f"{_NS}::gradcampp_weights_torchcam", mutates_args=())
def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """TorchCAM 0.5 Grad-CAM++ weights ``(N, C, *S) -> (N, C)``; default: the reference."""
    return reference.gradcampp_weights_torchcam(grads).contiguous()


@gradcampp_weights_torchcam.register_kernel("cuda")
def _gradcampp_weights_torchcam_cuda(grads: Tensor) -> Tensor:
    return _grad_weights.gradcampp_weights_torchcam(grads)


@gradcampp_weights_torchcam.register_fake
def _gradcampp_weights_torchcam_fake(grads: Tensor) -> Tensor:
    return grads.new_empty(grads.shape[:2])


# --- masked inputs ----------------------------------------------------------------------------------------------


@torch.library.custom_op(f"{_NS}::masked_inputs", mutates_args=())
def masked_inputs(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    noise: Tensor | None,
    scale: float,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    mode: str | None,
    eps: float,
) -> Tensor:
    """Score-CAM masked inputs ``-> (stop - start, Cin, *S_in)``; default: the reference."""
    out = reference.masked_inputs(
        activations, inputs, start, stop, noise=noise, scale=scale, out_dtype=out_dtype,
        channels_last=channels_last, mode=mode, eps=eps,
    )  # fmt: skip
    # Pin the layout the fake promises (the reference follows a channels-last ``inputs`` otherwise).
    return out.contiguous(memory_format=_memory_format(out.ndim - 2, channels_last))


@masked_inputs.register_kernel("cuda")
def _masked_inputs_cuda(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    noise: Tensor | None,
    scale: float,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    mode: str | None,
    eps: float,
) -> Tensor:
    out = _masked_inputs.masked_inputs(
        activations, inputs, start, stop, noise=noise, scale=scale, out_dtype=out_dtype,
        channels_last=channels_last, mode=mode, eps=eps,
    )  # fmt: skip
    return out.contiguous(memory_format=_memory_format(out.ndim - 2, channels_last))  # no-op unless delegated


@masked_inputs.register_fake
def _masked_inputs_fake(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    noise: Tensor | None,
    scale: float,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    mode: str | None,
    eps: float,
) -> Tensor:
    shape = (stop - start, *inputs.shape[1:])
    fmt = _memory_format(inputs.ndim - 2, channels_last)
    return torch.empty(shape, dtype=out_dtype or inputs.dtype, device=inputs.device, memory_format=fmt)
