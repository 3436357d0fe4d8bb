"""The ``triton`` backend: the :mod:`pycam_fast.reference` op functions, routed to the Triton kernels.

* CUDA tensors go through the ``pycam_fast_triton::*`` custom ops (:mod:`.ops`), so ``torch.compile`` sees them.
* CPU tensors under ``TRITON_INTERPRET=1`` call the Triton launchers directly (how CI tests the kernels on CPU).
* Anything else (CPU without the interpreter, or inputs that need autograd: the kernels have no backward) uses the
  reference functions.

Every launcher delegates the cases its kernels do not cover (float64, ``mode="nearest"``, Smooth Grad-CAM++ moments,
empty tensors) to the reference, so the math lives in one place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from pycam_fast import reference
from pycam_fast.reference import DEFAULT_EPS

from . import cam_step as _cam_step
from . import grad_weights as _grad_weights
from . import masked_inputs as _masked_inputs
from . import ops

__all__ = [
    "INTERPRET",
    "cam_step",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
    "overlay",
    "xgradcam_weights",
]

#: Whether the kernels were built for Triton's CPU interpreter (``triton.jit`` reads the variable when it decorates,
#: i.e. when this package's kernel modules were first imported).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _route(t: Tensor, *others: Tensor | None) -> str:
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (t, *others)):
        return "reference"  # the kernels have no backward; the reference ops are differentiable
    if t.is_cuda:
        return "op"
    if INTERPRET and t.device.type == "cpu":
        return "kernel"
    return "reference"


def cam_step(
    weights: Tensor,
    activations: Tensor,
    *,
    relu: bool = True,
    output_size: Sequence[int] | None = None,
    normalize: bool = True,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """CAM step (see :func:`pycam_fast.reference.cam_step`): ``(N, C) | (N, C, *S), (N, C, *S) -> (N, *S_out)``."""
    route = _route(activations, weights)
    if route == "op":
        size = [int(s) for s in output_size] if output_size is not None else None
        return ops.cam_step(weights, activations, relu, size, normalize, float(eps))
    impl = _cam_step.cam_step if route == "kernel" else reference.cam_step
    return impl(weights, activations, relu=relu, output_size=output_size, normalize=normalize, eps=eps)


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    route = _route(grads)
    if route == "op":
        return ops.gradcam_weights(grads)
    return (_grad_weights.gradcam_weights if route == "kernel" else reference.gradcam_weights)(grads)


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """XGrad-CAM weights ``sum_S(g A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    route = _route(grads, activations)
    if route == "op":
        return ops.xgradcam_weights(grads, activations, float(eps))
    return (_grad_weights.xgradcam_weights if route == "kernel" else reference.xgradcam_weights)(
        grads, activations, eps
    )


def gradcampp_weights(
    grads: Tensor,
    activations: Tensor,
    eps: float = DEFAULT_EPS,
    *,
    grads_sq: Tensor | None = None,
    grads_cube: Tensor | None = None,
) -> Tensor:
    """Grad-CAM++ weights (see :func:`pycam_fast.reference.gradcampp_weights`): ``(N, C, *S) x2 -> (N, C)``."""
    route = _route(grads, activations, grads_sq, grads_cube)
    if route == "op":
        return ops.gradcampp_weights(grads, activations, float(eps), grads_sq, grads_cube)
    impl = _grad_weights.gradcampp_weights if route == "kernel" else reference.gradcampp_weights
    return impl(grads, activations, eps, grads_sq=grads_sq, grads_cube=grads_cube)


def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """TorchCAM 0.5 Grad-CAM++ weights ``sum_S(g^2 relu(g))``: ``(N, C, *S) -> (N, C)``."""
    route = _route(grads)
    if route == "op":
        return ops.gradcampp_weights_torchcam(grads)
    return (_grad_weights.gradcampp_weights_torchcam if route == "kernel" else reference.gradcampp_weights_torchcam)(
        grads
    )


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
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Score-CAM masked inputs (see :func:`pycam_fast.reference.masked_inputs`): ``-> (stop - start, Cin, *S_in)``."""
    route = _route(activations, inputs, noise)
    if route == "op":
        return ops.masked_inputs(
            activations, inputs, int(start), int(stop), noise, float(scale), out_dtype, channels_last, mode,
            float(eps),
        )  # fmt: skip
    impl = _masked_inputs.masked_inputs if route == "kernel" else reference.masked_inputs
    return impl(
        activations, inputs, start, stop, noise=noise, scale=scale, out_dtype=out_dtype,
        channels_last=channels_last, mode=mode, eps=eps,
    )  # fmt: skip


def overlay(images: Tensor, cams: Tensor, table: Tensor) -> Tensor:
    """Overlay (see :func:`pycam_fast.reference.overlay`): no Triton kernel (a table lookup), so the reference."""
    return reference.overlay(images, cams, table)
