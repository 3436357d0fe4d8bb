"""Fused CAM step: weighted channel sum -> resize -> ReLU -> per-sample min-max.

``cam[n] = minmax(relu(U(nansum_c(w[n, c] * A[n, c]))))`` with ``A: (N, C, *S)``, ``w: (N, C)``, ``(1, C)`` or
``(N, C, *S)`` (LayerCAM), ``U`` the ``align_corners=False`` (bi/tri)linear resize to ``S_out`` and
``minmax(x) = (x - min) / (max(x - min) + eps)``. Output ``(N, *S_out)`` in the promoted dtype of ``w`` and ``A``.

Three launches, no ``(N, C, *S_out)`` intermediate:

1. ``_cam_sum_kernel`` reduces over ``C`` at feature resolution into an fp32 ``(SPLIT, N, P_in)`` buffer. The sum
   is linear, so summing before resizing reads ``C * P_in`` instead of ``C * P_out`` elements (for a ResNet-50
   layer4 CAM upsampled to 224x224 that is 49 vs 50,176 pixels per channel, 1024x less). ``SPLIT > 1`` splits the
   channels over more programs when ``N * P_in`` alone gives too few (N=1, 7x7 -> 1 program for 2048 channels).
   Without a resize (and ``SPLIT == 1``) this kernel also applies the ReLU and writes the min/max partials.
2. ``_cam_finalize_kernel`` interpolates the 4 (2-D) or 8 (3-D) source pixels of each output pixel (after a torch
   ``sum`` of the split partials when ``SPLIT > 1``), applies the ReLU, and writes one (min, max) partial per
   program.
3. ``_cam_normalize_kernel`` reduces the partials of its sample and normalises (or only casts).

Normalisation follows the rule of :func:`pycam_fast.ops.cam_step`: a map that is constant at feature resolution
becomes exactly 0 (step 3 reads a per-sample flag computed from the feature-resolution sums), because the resize
``v0 * l0 + v1 * l1`` of a constant can move by an ulp, which ``1 / eps`` would blow up.
The launcher takes what the ``triton`` backend passes it (fp16/bf16/fp32, weights broadcastable to ``A``, non-empty).
"""

# Triton convention: sizes and constexpr kernel arguments in capitals (BLOCK_P, H, W, ...).
# ruff: noqa: N803

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    interp_scales,
    is_flat_contiguous,
    lerp_source,
    pad3,
    spatial_offset,
    spatial_strides,
)

__all__ = ["cam_step"]

# 4096 elements per [BLOCK_C, BLOCK_P] tile = 32 fp32 registers per thread at 4 warps, the usual Triton budget for
# a load + multiply + reduce body without spilling.
_SUM_TILE = 4096
# 256 pixels = 2 x 128-byte fp32 transactions per channel row; larger P_in blocks only shrink the grid.
_SUM_BLOCK_P = 256
# Resize/normalise are elementwise over P_out: 1024 pixels = 8 per thread at 4 warps (two 16-byte vector stores).
_OUT_BLOCK = 1024
# Grid size the channel split aims for, in programs per SM (2 resident programs per SM hide the load latency).
_PROGRAMS_PER_SM = 2


@triton.jit
def _cam_sum_kernel(
    w_ptr,
    a_ptr,
    buf_ptr,
    part_ptr,
    N,
    C,
    P,
    H,
    W,
    c_per_split,
    num_blocks,
    s_wn,
    s_wc,
    s_wd,
    s_wh,
    s_ww,
    s_an,
    s_ac,
    s_ad,
    s_ah,
    s_aw,
    W_SPATIAL: tl.constexpr,
    W_CONTIG: tl.constexpr,
    A_CONTIG: tl.constexpr,
    FINAL: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)  # int64: n * s_an overflows int32 past 2^31 elements
    split = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    a_sp = spatial_offset(offs_p, H, W, s_ad, s_ah, s_aw, A_CONTIG)
    if W_SPATIAL:
        w_sp = spatial_offset(offs_p, H, W, s_wd, s_wh, s_ww, W_CONTIG)
    a_base = a_ptr + n * s_an
    w_base = w_ptr + n * s_wn
    c_start = split * c_per_split
    c_stop = tl.minimum(c_start + c_per_split, C)
    acc = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(c_start, c_stop, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < c_stop
        mask = mask_c[:, None] & mask_p[None, :]
        a = tl.load(a_base + offs_c[:, None] * s_ac + a_sp[None, :], mask=mask, other=0.0).to(tl.float32)
        if W_SPATIAL:
            w = tl.load(w_base + offs_c[:, None] * s_wc + w_sp[None, :], mask=mask, other=0.0).to(tl.float32)
        else:
            w = tl.load(w_base + offs_c * s_wc, mask=mask_c, other=0.0).to(tl.float32)[:, None]
        prod = w * a
        acc += tl.sum(tl.where(prod == prod, prod, 0.0), axis=0)  # nansum: NaN products are skipped
    if FINAL:
        if RELU:
            acc = tl.maximum(acc, 0.0)
        part = part_ptr + (n * num_blocks + pid_p) * 2
        tl.store(part, tl.min(tl.where(mask_p, acc, float("inf")), axis=0))
        tl.store(part + 1, tl.max(tl.where(mask_p, acc, -float("inf")), axis=0))
    tl.store(buf_ptr + (split * N + n) * P + offs_p, acc, mask=mask_p)


@triton.jit
def _bilerp(ptr, plane, h0, h1, lh0, lh1, w0, w1, lw0, lw1, W_in, mask):
    """Bilinear value from the plane at offset ``plane`` of a packed map, in ATen's evaluation order."""
    r0 = ptr + plane + h0 * W_in
    r1 = ptr + plane + h1 * W_in
    top = lw0 * tl.load(r0 + w0, mask=mask, other=0.0) + lw1 * tl.load(r0 + w1, mask=mask, other=0.0)
    bottom = lw0 * tl.load(r1 + w0, mask=mask, other=0.0) + lw1 * tl.load(r1 + w1, mask=mask, other=0.0)
    return lh0 * top + lh1 * bottom


@triton.jit
def _sample_block(P, BLOCK: tl.constexpr):
    """A program's block ``pid`` (grid axis 0) of sample ``n`` (axis 1, int64), its offsets and mask ``offs < P``."""
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    return pid, n, offs, offs < P


@triton.jit
def _cam_finalize_kernel(
    buf_ptr,
    out_ptr,
    part_ptr,
    P_in,
    D_in,
    H_in,
    W_in,
    P_out,
    H_out,
    W_out,
    scale_d,
    scale_h,
    scale_w,
    num_blocks,
    RESIZE: tl.constexpr,
    IS_3D: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid, n, offs, mask = _sample_block(P_out, BLOCK)
    src = buf_ptr + n * P_in
    if RESIZE:
        ow = offs % W_out
        oh = (offs // W_out) % H_out
        w0, w1, lw0, lw1 = lerp_source(ow, W_in, scale_w)
        h0, h1, lh0, lh1 = lerp_source(oh, H_in, scale_h)
        if IS_3D:
            od = offs // (W_out * H_out)
            d0, d1, ld0, ld1 = lerp_source(od, D_in, scale_d)
            hw = H_in * W_in
            v = ld0 * _bilerp(src, d0 * hw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, W_in, mask)
            v += ld1 * _bilerp(src, d1 * hw, h0, h1, lh0, lh1, w0, w1, lw0, lw1, W_in, mask)
        else:
            v = _bilerp(src, 0, h0, h1, lh0, lh1, w0, w1, lw0, lw1, W_in, mask)
    else:
        v = tl.load(src + offs, mask=mask, other=0.0)
    if RELU:
        v = tl.maximum(v, 0.0)
    part = part_ptr + (n * num_blocks + pid) * 2
    tl.store(part, tl.min(tl.where(mask, v, float("inf")), axis=0))
    tl.store(part + 1, tl.max(tl.where(mask, v, -float("inf")), axis=0))
    tl.store(out_ptr + n * P_out + offs, v, mask=mask)


@triton.jit
def _cam_normalize_kernel(
    x_ptr,
    part_ptr,
    const_ptr,
    out_ptr,
    P,
    num_blocks,
    eps,
    NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_PART: tl.constexpr,
):
    _pid, n, offs, mask = _sample_block(P, BLOCK)
    x = tl.load(x_ptr + n * P + offs, mask=mask, other=0.0)
    if NORMALIZE:
        lo = tl.full([BLOCK_PART], float("inf"), tl.float32)
        hi = tl.full([BLOCK_PART], -float("inf"), tl.float32)
        for i0 in range(0, num_blocks, BLOCK_PART):
            i = i0 + tl.arange(0, BLOCK_PART)
            part = part_ptr + (n * num_blocks + i) * 2
            lo = tl.minimum(lo, tl.load(part, mask=i < num_blocks, other=float("inf")))
            hi = tl.maximum(hi, tl.load(part + 1, mask=i < num_blocks, other=-float("inf")))
        mn = tl.min(lo, axis=0)
        mx = tl.max(hi, axis=0)
        # max(x - min) == max - min exactly (rounded subtraction is monotonic), so this is the reference formula.
        # (masked lanes zeroed: -min / eps would overflow the fp16 cast, which the interpreter warns about)
        x = tl.where(mask, (x - mn) / ((mx - mn) + eps), 0.0)
        x = tl.where(tl.load(const_ptr + n) != 0, 0.0, x)
    tl.store(out_ptr + n * P + offs, x.to(out_ptr.dtype.element_ty), mask=mask)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the interpreter runs programs one by one: fewer, bigger programs are faster
    return torch.cuda.get_device_properties(device).multi_processor_count


def cam_step(
    weights: Tensor,
    activations: Tensor,
    relu: bool,
    output_size: Sequence[int] | None,
    normalize: bool,
    eps: float,
    split: int | None = None,
) -> Tensor:
    """Triton CAM step (schema ``cam_step``; see :func:`pycam_fast.ops.cam_step`).

    Args:
        weights: ``(N, C)``, ``(1, C)`` or ``(N, C, *S)``, broadcastable to ``activations``; any strides.
        activations: ``(N, C, *S)`` with 1-3 spatial dims, non-empty; any strides.
        relu: clamp negative values.
        output_size: optional ``S_out`` (``align_corners=False`` linear/bilinear/trilinear resize).
        normalize: per-sample min-max normalisation.
        eps: added to the range by the normalisation.
        split: number of channel splits (default: enough to fill the GPU; 1 in the interpreter).

    Returns:
        ``(N, *S)`` or ``(N, *S_out)`` maps in the promoted dtype.

    """
    w = weights[(...,) + (None,) * (activations.ndim - weights.ndim)].expand(activations.shape)
    out_size = tuple(int(s) for s in output_size) if output_size is not None else tuple(activations.shape[2:])
    a = activations
    n_batch, num_ch = a.shape[:2]
    d_in, h_in, w_in = pad3(a.shape[2:])
    p_in = d_in * h_in * w_in
    d_out, h_out, w_out = pad3(out_size)
    p_out = d_out * h_out * w_out
    resize = out_size != tuple(a.shape[2:])
    dtype = torch.promote_types(weights.dtype, activations.dtype)
    w_spatial = any(st != 0 and sz != 1 for st, sz in zip(w.stride()[2:], w.shape[2:], strict=True))

    block_p = min(triton.next_power_of_2(p_in), _SUM_BLOCK_P)
    block_c = min(triton.next_power_of_2(num_ch), max(_SUM_TILE // block_p, 1))
    blocks_p = triton.cdiv(p_in, block_p)
    chunks = triton.cdiv(num_ch, block_c)
    if split is None:
        target = _PROGRAMS_PER_SM * _sm_count(a.device)
        split = min(triton.cdiv(target, blocks_p * n_batch), chunks)
    split = max(1, min(int(split), chunks))
    c_per_split = triton.cdiv(chunks, split) * block_c
    split = triton.cdiv(num_ch, c_per_split)  # no empty splits

    fused = not resize and split == 1  # the sum kernel can finish the map itself
    buf = torch.empty((split, n_batch, p_in), device=a.device, dtype=torch.float32)
    part_sum = torch.empty((n_batch, blocks_p, 2), device=a.device, dtype=torch.float32)
    sw = spatial_strides(w, 2)
    sa = spatial_strides(a, 2)
    _cam_sum_kernel[(blocks_p, n_batch, split)](
        w, a, buf, part_sum, n_batch, num_ch, p_in, h_in, w_in, c_per_split, blocks_p,
        w.stride(0), w.stride(1), *sw, a.stride(0), a.stride(1), *sa,
        W_SPATIAL=w_spatial, W_CONTIG=is_flat_contiguous(w, 2), A_CONTIG=is_flat_contiguous(a, 2),
        FINAL=fused, RELU=relu, BLOCK_C=block_c, BLOCK_P=block_p,
    )  # fmt: skip
    # the constant-map rule needs the feature-resolution range only when the map is resized
    constant = buf.new_zeros(n_batch, dtype=torch.int8)
    if fused:
        cam, parts, num_blocks = buf[0], part_sum, blocks_p
    else:
        if split > 1:
            # One tiny reduction (e.g. 32 splits x 8 x 49 fp32 = 50 KB for N=8 7x7 on an H100) rather than summing
            # the splits at each of the 4 source pixels of every output pixel (128 loads per pixel at 224x224).
            buf = buf.sum(0, keepdim=True)
        if normalize and resize:
            constant = (buf[0].amax(1) == buf[0].amin(1)).to(torch.int8)
        block = min(triton.next_power_of_2(p_out), _OUT_BLOCK)
        num_blocks = triton.cdiv(p_out, block)
        cam = torch.empty((n_batch, p_out), device=a.device, dtype=torch.float32)
        parts = torch.empty((n_batch, num_blocks, 2), device=a.device, dtype=torch.float32)
        _cam_finalize_kernel[(num_blocks, n_batch)](
            buf, cam, parts, p_in, d_in, h_in, w_in, p_out, h_out, w_out,
            *interp_scales((d_in, h_in, w_in), (d_out, h_out, w_out)), num_blocks,
            RESIZE=resize, IS_3D=d_in != 1 or d_out != 1, RELU=relu, BLOCK=block,
        )  # fmt: skip
    if not normalize and dtype == torch.float32:
        return cam.view(n_batch, *out_size)
    out = torch.empty((n_batch, *out_size), device=a.device, dtype=dtype)
    block = min(triton.next_power_of_2(p_out), _OUT_BLOCK)
    _cam_normalize_kernel[(triton.cdiv(p_out, block), n_batch)](
        cam, parts, constant, out, p_out, num_blocks, eps,
        NORMALIZE=normalize, BLOCK=block, BLOCK_PART=min(triton.next_power_of_2(num_blocks), 1024),
    )  # fmt: skip
    return out
