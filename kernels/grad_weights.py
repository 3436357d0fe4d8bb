"""Gradient-based channel weights: each program reduces a tile of ``(n, c)`` rows over the spatial dims.

Shapes: ``grads``, ``activations``: ``(N, C, *S)`` (1-3 spatial dims, any strides) -> weights ``(N, C)``.

* Grad-CAM: ``w = mean_S(g)``
* XGrad-CAM: ``w = sum_S(g * A) / (sum_S(A) + eps)``
* Grad-CAM++: ``alpha = g^2 / (2 g^2 + sum_S(A) g^3 + eps)`` where ``g^2 > 0`` else 0, ``w = sum_S(alpha relu(g))``
  (two passes over the row: ``sum_S(A)`` first, then ``g``; each tensor is still read once)
* TorchCAM 0.5 Grad-CAM++: ``w = sum_S(g^2 relu(g))``

The four share one kernel with a constexpr ``MODE``, so each compiles to its own specialised binary. Accumulation is
fp32 whatever the input dtype. The launchers take what the ``triton`` backend passes them (same-shape, same-dtype
fp16/bf16/fp32, non-empty).
"""

# Triton convention: sizes and constexpr kernel arguments in capitals (BLOCK_P, H, W, ...).
# ruff: noqa: N803

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import is_flat_contiguous, pad3, spatial_offset, spatial_strides

__all__ = ["gradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam", "xgradcam_weights"]

_GRADCAM, _XGRADCAM, _GRADCAMPP, _GRADCAMPP_TORCHCAM = 0, 1, 2, 3

# Rows are short (7x7 = 49 to 56x56 = 3136 pixels for ResNet-50 layers), so one program reduces a
# [BLOCK_R, BLOCK_P] tile of rows: a 64-lane block alone would leave half of a 4-warp program idle on 7x7 maps.
# 4096 elements per tile = 32 fp32 registers per thread at 4 warps.
_TILE = 4096
_MAX_BLOCK_P = 1024


@triton.jit
def _grad_weights_kernel(
    g_ptr,
    a_ptr,
    out_ptr,
    R,
    C,
    P,
    H,
    W,
    s_gn,
    s_gc,
    s_gd,
    s_gh,
    s_gw,
    s_an,
    s_ac,
    s_ad,
    s_ah,
    s_aw,
    eps,
    MODE: tl.constexpr,
    G_CONTIG: tl.constexpr,
    A_CONTIG: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < R
    n = (rows // C).to(tl.int64)  # int64: n * s_gn overflows int32 past 2^31 elements
    c = (rows % C).to(tl.int64)
    g_rows = g_ptr + (n * s_gn + c * s_gc)[:, None]
    a_rows = a_ptr + (n * s_an + c * s_ac)[:, None]
    lanes = tl.arange(0, BLOCK_P)
    acc = tl.zeros([BLOCK_R, BLOCK_P], dtype=tl.float32)
    a_acc = tl.zeros([BLOCK_R, BLOCK_P], dtype=tl.float32)
    if MODE == 1 or MODE == 2:
        # XGrad-CAM needs sum_S(A) next to sum_S(g A); Grad-CAM++ needs it before its alpha pass.
        for p0 in range(0, P, BLOCK_P):
            offs = p0 + lanes
            mask = row_mask[:, None] & (offs < P)[None, :]
            a_sp = spatial_offset(offs, H, W, s_ad, s_ah, s_aw, A_CONTIG)
            a = tl.load(a_rows + a_sp[None, :], mask=mask, other=0.0).to(tl.float32)
            a_acc += a
            if MODE == 1:
                g_sp = spatial_offset(offs, H, W, s_gd, s_gh, s_gw, G_CONTIG)
                acc += tl.load(g_rows + g_sp[None, :], mask=mask, other=0.0).to(tl.float32) * a
    a_sum = tl.sum(a_acc, axis=1)
    if MODE != 1:
        for p0 in range(0, P, BLOCK_P):
            offs = p0 + lanes
            mask = row_mask[:, None] & (offs < P)[None, :]
            g_sp = spatial_offset(offs, H, W, s_gd, s_gh, s_gw, G_CONTIG)
            g = tl.load(g_rows + g_sp[None, :], mask=mask, other=0.0).to(tl.float32)
            if MODE == 0:
                acc += g
            else:
                g2 = g * g
                if MODE == 2:
                    denom = 2.0 * g2 + a_sum[:, None] * (g2 * g) + eps
                    positive = g2 > 0.0
                    alpha = tl.where(positive, g2 / tl.where(positive, denom, 1.0), 0.0)
                    acc += alpha * tl.maximum(g, 0.0)
                else:
                    acc += g2 * tl.maximum(g, 0.0)
    total = tl.sum(acc, axis=1)
    if MODE == 0:
        total = total / P
    if MODE == 1:
        total = total / (a_sum + eps)
    tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_mask)


def _launch(mode: int, grads: Tensor, activations: Tensor, dtype: torch.dtype, eps: float) -> Tensor:
    n_batch, num_ch = grads.shape[:2]
    _, h, w = pad3(grads.shape[2:])
    p = grads[0, 0].numel()
    out = torch.empty((n_batch, num_ch), device=grads.device, dtype=dtype)
    rows = n_batch * num_ch
    block_p = min(triton.next_power_of_2(p), _MAX_BLOCK_P)
    block_r = min(triton.next_power_of_2(rows), max(_TILE // block_p, 1))
    _grad_weights_kernel[(triton.cdiv(rows, block_r),)](
        grads, activations, out, rows, num_ch, p, h, w,
        grads.stride(0), grads.stride(1), *spatial_strides(grads, 2),
        activations.stride(0), activations.stride(1), *spatial_strides(activations, 2), eps,
        MODE=mode, G_CONTIG=is_flat_contiguous(grads, 2), A_CONTIG=is_flat_contiguous(activations, 2),
        BLOCK_R=block_r, BLOCK_P=block_p,
    )  # fmt: skip
    return out


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    return _launch(_GRADCAM, grads, grads, grads.dtype, 0.0)


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float) -> Tensor:
    """XGrad-CAM weights ``sum_S(g A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    return _launch(_XGRADCAM, grads, activations, grads.dtype, eps)


def gradcampp_weights(grads: Tensor, activations: Tensor, eps: float) -> Tensor:
    """Grad-CAM++ weights ``sum_S(alpha relu(g))``: ``(N, C, *S) x2 -> (N, C)``."""
    return _launch(_GRADCAMPP, grads, activations, grads.dtype, eps)


def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """TorchCAM 0.5 Grad-CAM++ weights ``sum_S(g^2 relu(g))``: ``(N, C, *S) -> (N, C)``."""
    return _launch(_GRADCAMPP_TORCHCAM, grads, grads, grads.dtype, 0.0)
