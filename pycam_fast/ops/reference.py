"""Pure-torch reference implementations of the backend ops: the ``torch`` backend and the test oracle.

Every op function takes its arguments positionally in the order of its schema (:mod:`pycam_fast.ops.schemas`), so
the dispatcher calls every backend the same way; it also serves as the op's fake (meta) implementation for
``torch.compile``, so its output layout is the one the compiled kernels promise (contiguous; ``masked_inputs``
channels-last on request). Shapes use ``N`` for the batch, ``C`` for channels and ``*S`` for the 1-3 spatial dims.

Resizing is ATen's ``align_corners=False`` linear interpolation (the values of ``F.interpolate``): the taps and the
blend ``v0 * l0 + v1 * l1`` of :func:`resize_taps`, in fp32 (fp64 for fp64 maps), W first, then H, then D. The blend
of a constant map can move by an ulp, so ``cam_step`` states the one rule every backend follows: with
``normalize``, a map that is constant at feature resolution becomes exactly 0 (its range is 0; rounding must not
invent one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_EPS",
    "cam_step",
    "channel_sum",
    "gradcam_weights",
    "gradcampp_from_moments",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
    "minmax_normalize",
    "nmf",
    "overlay",
    "resize_taps",
    "spatial_minmax",
    "upsample",
    "xgradcam_weights",
]

DEFAULT_EPS = 1e-8


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of ATen's kernels: fp64 for fp64, fp32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resize_taps(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple:
    """ATen's ``align_corners=False`` taps along one axis, op for op (``kernel_math.h``'s ``linear_tap``).

    ``src = max((in / out) * (dst + 0.5) - 0.5, 0)``, ``i0 = min(floor(src), in - 1)``, ``i1 = min(i0 + 1, in - 1)``,
    ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``; identity (``in == out``) taps are exact.

    Args:
        in_size: source length.
        out_size: destination length.
        device: where the taps live.
        dtype: fp32 (for fp16/bf16/fp32 maps) or fp64.

    Returns:
        ``(i0, i1, l0, l1)``, each ``(out_size,)``.

    """
    dst = torch.arange(out_size, device=device, dtype=dtype)
    if in_size == out_size:
        index = dst.long()
        return index, index, torch.ones_like(dst), torch.zeros_like(dst)
    scale = torch.tensor(float(in_size), device=device, dtype=dtype) / out_size  # rounded like ATen's opmath division
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0.0)
    i0 = src.long().clamp_max(in_size - 1)  # src >= 0: truncation is the floor
    lam = (src - i0).clamp(0.0, 1.0)
    return i0, (i0 + 1).clamp_max(in_size - 1), 1.0 - lam, lam


def _resize_axis(maps: Tensor, dim: int, out_size: int) -> Tensor:
    """``v0 * l0 + v1 * l1`` along ``dim`` (separately rounded products and sum, like ATen and the kernels)."""
    i0, i1, l0, l1 = resize_taps(maps.shape[dim], out_size, maps.device, maps.dtype)
    shape = [1] * maps.ndim
    shape[dim] = out_size
    return maps.index_select(dim, i0) * l0.view(shape) + maps.index_select(dim, i1) * l1.view(shape)


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Resize maps with ATen's ``align_corners=False`` (bi/tri)linear interpolation, separably (W, then H, then D).

    Args:
        maps: ``(N, *S)`` maps (no channel dim), 1-3 spatial dims.
        size: target spatial size ``S_out`` (same length as ``S``).

    Returns:
        ``(N, *S_out)`` maps in the input dtype (fp16/bf16 are interpolated in fp32).

    Raises:
        ValueError: ``size`` does not have one entry per spatial dim.

    """
    size = tuple(int(s) for s in size)
    if len(size) != maps.ndim - 1 or not 1 <= len(size) <= 3:
        raise ValueError(f"CAMs need 1, 2 or 3 spatial dims and one output size per dim, got {size} for {maps.shape}")
    if tuple(maps.shape[1:]) == size:
        return maps
    out = maps.to(_opmath(maps.dtype))
    for dim in range(maps.ndim - 1, 0, -1):
        if out.shape[dim] != size[dim - 1]:
            out = _resize_axis(out, dim, size[dim - 1])
    return out.to(maps.dtype)


def spatial_minmax(maps: Tensor, spatial_dims: int, eps: float = DEFAULT_EPS) -> Tensor:
    """Min-max normalise over the last ``spatial_dims`` dims: ``(x - min) / (max(x - min) + eps)``.

    A constant map becomes all zeros (never NaN). fp16/bf16 are normalised in fp32 (``eps = 1e-8`` is 0 in fp16).

    Args:
        maps: ``(..., *S)`` tensor.
        spatial_dims: how many trailing dims to normalise over.
        eps: added to the range.

    Returns:
        a new tensor of the same shape and dtype.

    """
    dims = tuple(range(maps.ndim - spatial_dims, maps.ndim))
    work = maps.to(_opmath(maps.dtype))
    shifted = work - work.amin(dim=dims, keepdim=True)
    return (shifted / (shifted.amax(dim=dims, keepdim=True) + eps)).to(maps.dtype)


def minmax_normalize(cams: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Per-sample min-max normalisation of ``(N, *S)`` maps (see :func:`spatial_minmax`)."""
    return spatial_minmax(cams, cams.ndim - 1, eps)


def channel_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """Weighted channel sum ``nansum_c(w * A)``.

    Args:
        weights: ``(N, C)``, ``(1, C)`` or full-shape ``(N, C, *S)`` (element-wise) weights.
        activations: ``(N, C, *S)``.

    Returns:
        ``(N, *S)`` in the promoted dtype of the inputs.

    """
    weights = weights[(...,) + (None,) * (activations.ndim - weights.ndim)]
    return torch.nansum(weights * activations, dim=1)


def cam_step(
    weights: Tensor,
    activations: Tensor,
    relu: bool = True,
    output_size: Sequence[int] | None = None,
    normalize: bool = True,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The CAM step: ``nansum_c(w * A)`` -> resize -> ReLU -> per-sample min-max (constant maps -> 0).

    Returns:
        ``(N, *S)`` or ``(N, *S_out)`` contiguous maps in the promoted dtype (see :func:`pycam_fast.ops.cam_step`).

    """
    cam = channel_sum(weights, activations)
    constant = None
    if normalize:
        flat = cam.flatten(1)
        constant = (flat.amax(1) == flat.amin(1)).view(-1, *([1] * (cam.ndim - 1)))
    if output_size is not None:
        cam = upsample(cam, output_size)
    if relu:
        cam = torch.relu(cam)
    if normalize:
        cam = minmax_normalize(cam, eps).masked_fill(constant, 0)
    return cam.contiguous()


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    return grads.flatten(2).mean(-1)


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """XGrad-CAM weights ``sum_S(g * A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    g, a = grads.flatten(2), activations.flatten(2)
    return (g * a).sum(-1) / (a.sum(-1) + eps)


def gradcampp_from_moments(d1: Tensor, d2: Tensor, d3: Tensor, activations: Tensor, eps: float) -> Tensor:
    """Grad-CAM++ weights from derivative moments: ``w = sum_S(alpha * relu(d1))``.

    ``alpha = d2 / (2 d2 + sum_S(A) d3 + eps)`` where ``d2 > 0``, else 0. Grad-CAM++ uses ``(g, g^2, g^3)``; Smooth
    Grad-CAM++ the means of those over its noisy samples.

    Args:
        d1: ``(N, C, *S)`` first derivatives (or their mean).
        d2: ``(N, C, *S)`` second-order term.
        d3: ``(N, C, *S)`` third-order term.
        activations: ``(N, C, *S)``.
        eps: added to the denominator.

    Returns:
        ``(N, C)`` weights.

    """
    d1, d2, d3 = d1.flatten(2), d2.flatten(2), d3.flatten(2)
    act_sum = activations.flatten(2).sum(-1, keepdim=True)
    denom = 2 * d2 + act_sum * d3 + eps
    alpha = torch.where(d2 > 0, d2 / torch.where(d2 > 0, denom, torch.ones_like(denom)), torch.zeros_like(d2))
    return (alpha * torch.relu(d1)).sum(-1)


def gradcampp_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Grad-CAM++ weights with ``(g, g^2, g^3)``: ``(N, C, *S) x2 -> (N, C)`` (see :func:`gradcampp_from_moments`)."""
    g2 = grads * grads
    return gradcampp_from_moments(grads, g2, g2 * grads, activations, eps)


def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """What TorchCAM 0.5.0's GradCAMpp returns: ``sum_S(g^2 * relu(g))`` (its alpha division is lost)."""
    g = grads.flatten(2)
    return (g * g * torch.relu(g)).sum(-1)


def masked_inputs(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    noise: Tensor | None = None,
    scale: float = 1.0,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Score-CAM family masked inputs of the flattened (sample, channel) pairs ``start <= j < stop``.

    Returns:
        ``(stop - start, Cin, *S_in)`` (see :func:`pycam_fast.ops.masked_inputs`), channels-last on request.

    """
    num_ch = activations.shape[1]
    spatial_dims = activations.ndim - 2
    samples = torch.arange(start, stop, device=activations.device) // num_ch
    maps = activations.flatten(0, 1)[start:stop]
    masks = upsample(spatial_minmax(maps, spatial_dims, eps), inputs.shape[2:])
    if noise is not None:
        masks = masks + noise.to(masks.dtype)
    base = inputs if inputs.shape[0] == 1 else inputs[samples]
    out = masks.unsqueeze(1) * base
    if scale != 1.0:
        out = out * scale
    out = out.to(out_dtype or inputs.dtype)
    fmt = torch.contiguous_format
    if channels_last and spatial_dims in (2, 3):
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    return out.contiguous(memory_format=fmt)


def _byte_scale(values: Tensor) -> Tensor:
    """``255 * clamp(x, 0, 1) + 0.5`` in fp32 (fp64 for fp64) with NaN -> 0; truncation: round-half-up to 0..255.

    fp16/bf16 are widened first: in bf16, ``255 + 0.5`` rounds to 256, one past the blend-table row.
    """
    return values.to(_opmath(values.dtype)).nan_to_num(0.0).clamp(0, 1).mul_(255).add_(0.5)


def overlay(images: Tensor, cams: Tensor, table: Tensor) -> Tensor:
    """Blend colour-mapped CAMs over images through a blend table (the spec of the compiled ``overlay`` op).

    Returns:
        ``(N, 3, H, W)`` contiguous uint8 overlays (see :func:`pycam_fast.ops.overlay`).

    """
    num, _, height, width = images.shape
    up = _byte_scale(cams.float())  # fp64 maps are rounded to fp32 first
    for dim, size in ((2, width), (1, height)):
        up = _resize_axis(up, dim, size)
    rows = up.to(torch.int32).mul_(256)  # (N, H, W) blend-table row offsets
    out = torch.empty((num, 3, height, width), dtype=torch.uint8, device=images.device)
    for channel in range(3):  # whole-batch ops only: few, large kernels
        pixels = images[:, channel]
        pixels = pixels.to(torch.int32) if pixels.dtype == torch.uint8 else _byte_scale(pixels).to(torch.int32)
        index = pixels.add_(rows)
        out[:, channel] = table[channel].index_select(0, index.reshape(-1)).view(index.shape)
    return out


def _cd_pass(rows: Tensor, gram: Tensor, prod: Tensor) -> Tensor:
    """One cyclic coordinate-descent pass over the rows ``(k, p)`` of ``rows``, in place.

    Row ``t``: ``grad = gram[t] @ rows - prod[t]``, then ``rows[t] = max(rows[t] - grad / gram[t, t], 0)`` (kept
    where ``gram[t, t] == 0``). Returns the summed ``|projected gradient|`` before the updates (0-D).
    """
    violation = rows.new_zeros(())
    for t in range(rows.shape[0]):
        grad = gram[t] @ rows - prod[t]
        projected = torch.where(rows[t] == 0, grad.clamp(max=0), grad)
        violation = violation + projected.abs().sum()
        hess = gram[t, t]
        rows[t] = torch.where(hess != 0, (rows[t] - grad / hess).clamp(min=0), rows[t])
    return violation


def nmf(v: Tensor, w: Tensor, h: Tensor, max_iter: int = 200, tol: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """Non-negative matrix factorisation ``v ~ w @ h`` by cyclic coordinate descent from the start ``(w, h)``.

    Each iteration updates the rows of ``w^T`` (with ``gram = h h^T``, ``prod = h v^T``), then the rows of ``h``
    (``gram = w^T w``, ``prod = w^T v``), one component at a time (see :func:`_cd_pass`); a matrix stops after the
    iteration whose summed ``|projected gradient|`` is at most ``tol`` times the first iteration's, or after
    ``max_iter`` (scikit-learn's coordinate-descent NMF rule).

    Args:
        v: ``(B, m, n)`` non-negative float32/float64 matrices.
        w: ``(B, m, k)`` non-negative start (not modified).
        h: ``(B, k, n)`` non-negative start (not modified).
        max_iter: iteration limit (>= 1).
        tol: relative violation that stops a matrix.

    Returns:
        ``w`` ``(B, m, k)``, ``h`` ``(B, k, n)`` (contiguous) and the iterations run per matrix, ``(B,)`` int64.

    """
    rows_w = w.transpose(1, 2).clone(memory_format=torch.contiguous_format)
    rows_h = h.clone(memory_format=torch.contiguous_format)
    iterations = [_cd_solve(target, wt, ht, max_iter, tol) for target, wt, ht in zip(v, rows_w, rows_h, strict=True)]
    count = torch.tensor(iterations, dtype=torch.int64, device=v.device)
    return rows_w.transpose(1, 2).contiguous(), rows_h, count


def _cd_solve(target: Tensor, wt: Tensor, h: Tensor, max_iter: int, tol: float) -> int:
    """Solves ``target (m, n) ~ wt^T h`` in place (``wt (k, m)``, ``h (k, n)``); returns the iterations run."""
    first = None
    for iteration in range(1, max_iter + 1):
        violation = _cd_pass(wt, h @ h.T, h @ target.T)
        violation = float(violation + _cd_pass(h, wt @ wt.T, wt @ target))
        first = violation if first is None else first
        if first == 0 or violation / first <= tol:
            return iteration
    return max_iter
