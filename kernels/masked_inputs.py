"""Score-CAM family masked inputs, with the upsampled masks computed on the fly (never materialised).

For the flattened pairs ``j = n * C + c`` with ``start <= j < stop``:
``out[j - start] = scale * (U(minmax(A[n, c])) + noise[j - start]) * inputs[n or 0]``, where ``minmax`` normalises
one channel at feature resolution (``(a - min) / (max - min + eps)``) and ``U`` is the ``align_corners=False``
(bi/tri)linear resize to the input size. Shapes: ``A: (N, C, *S)``, ``inputs: (N | 1, Cin, *S_in)``,
``noise: (stop - start, *S_in)``, out ``(stop - start, Cin, *S_in)`` in ``out_dtype``, optionally channels-last.

Two launches:

1. ``_channel_minmax_kernel``: each program takes a tile of pairs and writes ``(min, max - min)`` at feature
   resolution (8 bytes per pair; the maps themselves are not rewritten).
2. ``_masked_inputs_kernel``: per output pixel, interpolates the shifted feature values ``a - min`` of the 4 (2-D)
   or 8 (3-D) source pixels, divides by ``range + eps``, adds the noise, and writes all ``Cin`` channels. Shifting
   before interpolating keeps a constant channel exactly 0 (interpolating first would leave ~1 ulp that ``1 / eps``
   blows up to ~0.1). The mask is computed once per pixel and reused for the ``Cin`` (usually 3) input channels,
   so the kernel is bound by the ``Cin`` reads + writes of the input/output, the minimum traffic.

The launcher takes what the ``triton`` backend passes it (fp16/bf16/fp32 tensors and out_dtype, a non-empty pair
range, ``inputs`` with batch 1 or N).
"""

# Triton convention: sizes and constexpr kernel arguments in capitals (BLOCK_P, H, W, ...).
# ruff: noqa: N803

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import interp_scales, lerp_source, pad3, spatial_strides

__all__ = ["masked_inputs"]

# Tiles of [BLOCK_J pairs, BLOCK_P pixels] of at most 4096 elements (32 fp32 registers per thread at 4 warps).
# Several pairs per program let a shared ``inputs`` (Score-CAM's single image) be loaded once for BLOCK_J masks,
# and keep the grid small for the CPU interpreter, whose cost is per program (~25 ms for 34 one-row programs vs
# ~1 ms for one 34-row program, measured on the grad-weight kernel).
_TILE = 4096
_MAX_BLOCK_P = 1024


@triton.jit
def _channel_minmax_kernel(
    a_ptr,
    stats_ptr,
    start,
    J,
    C,
    P,
    H,
    W,
    s_an,
    s_ac,
    s_ad,
    s_ah,
    s_aw,
    BLOCK_J: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    j_mask = j < J
    pair = (start + j).to(tl.int64)
    rows = a_ptr + ((pair // C) * s_an + (pair % C) * s_ac)[:, None]
    lanes = tl.arange(0, BLOCK_P)
    lo = tl.full([BLOCK_J, BLOCK_P], float("inf"), tl.float32)
    hi = tl.full([BLOCK_J, BLOCK_P], -float("inf"), tl.float32)
    nans = tl.zeros([BLOCK_J, BLOCK_P], dtype=tl.int32)
    for p0 in range(0, P, BLOCK_P):
        offs = p0 + lanes
        mask = j_mask[:, None] & (offs < P)[None, :]
        sp = (offs // (W * H)) * s_ad + ((offs // W) % H) * s_ah + (offs % W) * s_aw
        a = tl.load(rows + sp[None, :], mask=mask, other=0.0).to(tl.float32)
        lo = tl.minimum(lo, tl.where(mask, a, float("inf")))
        hi = tl.maximum(hi, tl.where(mask, a, -float("inf")))
        nans += (a != a).to(tl.int32)
    mn = tl.min(lo, axis=1)
    mx = tl.max(hi, axis=1)
    # torch.amin/amax propagate NaN, GPU min/max instructions drop it: count NaNs to match the reference (NaN map).
    mn = tl.where(tl.sum(nans, axis=1) > 0, float("nan"), mn)
    tl.store(stats_ptr + j * 2, mn, mask=j_mask)
    tl.store(stats_ptr + j * 2 + 1, mx - mn, mask=j_mask)


@triton.jit
def _bilerp_shifted(rows, mn, plane, h0, h1, lh0, lh1, w0, w1, lw0, lw1, s_ah, s_aw, mask):
    """Bilinear ``a - min`` over ``[BLOCK_J, BLOCK_P]`` from the plane at offset ``plane`` (ATen's order)."""
    r0 = (plane + h0 * s_ah)[None, :]
    r1 = (plane + h1 * s_ah)[None, :]
    c0 = (w0 * s_aw)[None, :]
    c1 = (w1 * s_aw)[None, :]
    lw0 = lw0[None, :]
    lw1 = lw1[None, :]
    v00 = tl.load(rows + r0 + c0, mask=mask, other=0.0).to(tl.float32) - mn
    v01 = tl.load(rows + r0 + c1, mask=mask, other=0.0).to(tl.float32) - mn
    v10 = tl.load(rows + r1 + c0, mask=mask, other=0.0).to(tl.float32) - mn
    v11 = tl.load(rows + r1 + c1, mask=mask, other=0.0).to(tl.float32) - mn
    return lh0[None, :] * (lw0 * v00 + lw1 * v01) + lh1[None, :] * (lw0 * v10 + lw1 * v11)


@triton.jit
def _masked_inputs_kernel(
    a_ptr,
    stats_ptr,
    x_ptr,
    noise_ptr,
    out_ptr,
    start,
    J,
    C,
    C_in,
    D_in,
    H_in,
    W_in,
    s_an,
    s_ac,
    s_ad,
    s_ah,
    s_aw,
    P_out,
    H_out,
    W_out,
    scale_d,
    scale_h,
    scale_w,
    s_xn,
    s_xc,
    s_xd,
    s_xh,
    s_xw,
    s_zn,
    s_zd,
    s_zh,
    s_zw,
    s_on,
    s_oc,
    s_od,
    s_oh,
    s_ow,
    eps,
    scale,
    HAS_NOISE: tl.constexpr,
    SHARED_INPUT: tl.constexpr,
    RESIZE: tl.constexpr,
    IS_3D: tl.constexpr,
    APPLY_SCALE: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    j_mask = j < J
    j64 = j.to(tl.int64)  # int64: j * s_on overflows int32 past 2^31 output elements
    pair = start + j64
    n = pair // C
    rows = a_ptr + (n * s_an + (pair % C) * s_ac)[:, None]
    mn = tl.load(stats_ptr + j * 2, mask=j_mask, other=0.0)[:, None]
    rng = tl.load(stats_ptr + j * 2 + 1, mask=j_mask, other=0.0)[:, None]
    offs = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs < P_out
    mask = j_mask[:, None] & p_mask[None, :]
    ow = offs % W_out
    oh = (offs // W_out) % H_out
    od = offs // (W_out * H_out)
    if RESIZE:
        w0, w1, lw0, lw1 = lerp_source(ow, W_in, scale_w)
        h0, h1, lh0, lh1 = lerp_source(oh, H_in, scale_h)
        if IS_3D:
            d0, d1, ld0, ld1 = lerp_source(od, D_in, scale_d)
            v = ld0[None, :] * _bilerp_shifted(
                rows, mn, d0 * s_ad, h0, h1, lh0, lh1, w0, w1, lw0, lw1, s_ah, s_aw, mask
            )
            v += ld1[None, :] * _bilerp_shifted(
                rows, mn, d1 * s_ad, h0, h1, lh0, lh1, w0, w1, lw0, lw1, s_ah, s_aw, mask
            )
        else:
            v = _bilerp_shifted(rows, mn, 0, h0, h1, lh0, lh1, w0, w1, lw0, lw1, s_ah, s_aw, mask)
    else:
        sp = od * s_ad + oh * s_ah + ow * s_aw
        v = tl.load(rows + sp[None, :], mask=mask, other=0.0).to(tl.float32) - mn
    m = v / (rng + eps)
    if HAS_NOISE:
        z_sp = od * s_zd + oh * s_zh + ow * s_zw
        m += tl.load(noise_ptr + (j64 * s_zn)[:, None] + z_sp[None, :], mask=mask, other=0.0).to(tl.float32)
    x_sp = od * s_xd + oh * s_xh + ow * s_xw
    if SHARED_INPUT:
        x_rows = x_ptr + x_sp[None, :]  # one [1, BLOCK_P] load serves the BLOCK_J masks
        x_mask = p_mask[None, :]
    else:
        x_rows = x_ptr + (n * s_xn)[:, None] + x_sp[None, :]
        x_mask = mask
    o_rows = out_ptr + (j64 * s_on)[:, None] + (od * s_od + oh * s_oh + ow * s_ow)[None, :]
    for ci in range(0, C_in):
        x = tl.load(x_rows + ci * s_xc, mask=x_mask, other=0.0).to(tl.float32)
        val = m * x
        if APPLY_SCALE:
            val = val * scale
        tl.store(o_rows + ci * s_oc, val.to(out_ptr.dtype.element_ty), mask=mask)


def masked_inputs(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    noise: Tensor | None,
    scale: float,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    eps: float,
) -> Tensor:
    """Triton masked inputs (schema ``masked_inputs``; see :func:`pycam_fast.ops.masked_inputs`).

    Args:
        activations: ``(N, C, *S)``, 1-3 spatial dims, any strides.
        inputs: ``(N, Cin, *S_in)`` or ``(1, Cin, *S_in)``, any strides.
        start: first flattened pair.
        stop: one past the last flattened pair.
        noise: optional ``(stop - start, *S_in)`` additive mask noise.
        scale: multiplier of the masked input.
        out_dtype: result dtype (default ``inputs.dtype``).
        channels_last: channels-last (2-D) / channels-last-3d (3-D) result.
        eps: added to each channel's range.

    Returns:
        ``(stop - start, Cin, *S_in)`` masked inputs.

    """
    spatial = activations.ndim - 2
    out_dtype = out_dtype or inputs.dtype
    num_pairs = stop - start
    a = activations
    num_ch = a.shape[1]
    c_in = inputs.shape[1]
    in_sizes = pad3(a.shape[2:])
    out_sizes = pad3(inputs.shape[2:])
    p_in = in_sizes[0] * in_sizes[1] * in_sizes[2]
    p_out = out_sizes[0] * out_sizes[1] * out_sizes[2]
    sa = spatial_strides(a, 2)

    stats = torch.empty((num_pairs, 2), device=a.device, dtype=torch.float32)
    block_p = min(triton.next_power_of_2(p_in), _MAX_BLOCK_P)
    block_j = min(triton.next_power_of_2(num_pairs), max(_TILE // block_p, 1))
    _channel_minmax_kernel[(triton.cdiv(num_pairs, block_j),)](
        a, stats, start, num_pairs, num_ch, p_in, in_sizes[1], in_sizes[2], a.stride(0), a.stride(1), *sa,
        BLOCK_J=block_j, BLOCK_P=block_p,
    )  # fmt: skip

    fmt = torch.contiguous_format
    if channels_last and spatial in (2, 3):
        fmt = torch.channels_last if spatial == 2 else torch.channels_last_3d
    out = torch.empty((num_pairs, c_in, *inputs.shape[2:]), device=a.device, dtype=out_dtype, memory_format=fmt)
    noise_arg = noise if noise is not None else stats  # never read without HAS_NOISE
    noise_strides = (noise.stride(0), *spatial_strides(noise, 1)) if noise is not None else (0, 0, 0, 0)
    block_p = min(triton.next_power_of_2(p_out), _MAX_BLOCK_P)
    block_j = min(triton.next_power_of_2(num_pairs), max(_TILE // block_p, 1))
    _masked_inputs_kernel[(triton.cdiv(p_out, block_p), triton.cdiv(num_pairs, block_j))](
        a, stats, inputs, noise_arg, out, start, num_pairs, num_ch, c_in, *in_sizes, a.stride(0), a.stride(1), *sa,
        p_out, out_sizes[1], out_sizes[2], *interp_scales(in_sizes, out_sizes),
        inputs.stride(0), inputs.stride(1), *spatial_strides(inputs, 2),
        *noise_strides, out.stride(0), out.stride(1), *spatial_strides(out, 2), eps, float(scale),
        HAS_NOISE=noise is not None, SHARED_INPUT=inputs.shape[0] == 1, RESIZE=in_sizes != out_sizes,
        IS_3D=in_sizes[0] != 1 or out_sizes[0] != 1, APPLY_SCALE=scale != 1.0, BLOCK_J=block_j,
        BLOCK_P=block_p,
    )  # fmt: skip
    return out
