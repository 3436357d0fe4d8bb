"""Pure-torch reference implementations of every backend op.

These functions are three things at once: the ``torch`` backend (CPU fallback, any device, any float dtype), the
seam where the compiled backends (``cpp``, ``cuda``, ``triton``) plug in with the same signatures, and the oracle
the compiled kernels are tested against. Shapes use ``N`` for the batch, ``C`` for channels and ``*S`` for the
1-D/2-D/3-D spatial dims of the target layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_EPS",
    "cam_step",
    "channel_sum",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "interp_mode",
    "masked_inputs",
    "minmax_normalize",
    "overlay",
    "spatial_minmax",
    "upsample",
    "xgradcam_weights",
]

DEFAULT_EPS = 1e-8

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interp_mode(spatial_dims: int) -> str:
    """Interpolation mode used for ``spatial_dims`` dims (linear, bilinear or trilinear).

    Raises:
        ValueError: for anything but 1, 2 or 3 spatial dims.

    """
    if spatial_dims not in _MODES:
        raise ValueError(f"CAMs need 1, 2 or 3 spatial dims, got {spatial_dims}")
    return _MODES[spatial_dims]


def _source_index(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``align_corners=False`` source pixels and weight along one axis, computed as ATen does.

    Returns:
        ``(i0, i1, lam)``: ``(out_size,)`` left/right source indices and the weight of the right one.

    """
    dst = torch.arange(out_size, device=device, dtype=torch.float64)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    return i0, i1, src - i0


def _lerp_axis(maps: Tensor, dim: int, out_size: int) -> Tensor:
    i0, i1, lam = _source_index(maps.shape[dim], out_size, maps.device)
    shape = [1] * maps.ndim
    shape[dim] = out_size
    left, right = maps.index_select(dim, i0), maps.index_select(dim, i1)
    # lerp(a, b, w) returns exactly a when a == b: a constant map stays constant (F.interpolate's
    # w0*a + w1*b is off by an ulp there, which min-max normalisation then blows up to O(1) values)
    return torch.lerp(left, right, lam.to(maps.dtype).view(shape))


def upsample(maps: Tensor, size: Sequence[int], mode: str | None = None) -> Tensor:
    """Resize maps with ``align_corners=False``: the values of ``F.interpolate`` (to rounding), separably.

    Args:
        maps: ``(N, *S)`` maps (no channel dim).
        size: target spatial size ``S_out`` (same length as ``S``).
        mode: ``"nearest"``, or linear/bilinear/trilinear (the default; all three mean separable linear).

    Returns:
        ``(N, *S_out)`` maps, same dtype (fp16/bf16 are interpolated in fp32).

    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    if mode == "nearest":
        return F.interpolate(maps.unsqueeze(1), size=size, mode="nearest").squeeze(1)
    interp_mode(maps.ndim - 1)
    out = maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps
    for axis, out_size in enumerate(size, start=1):
        if out.shape[axis] != out_size:
            out = _lerp_axis(out, axis, out_size)
    return out.to(maps.dtype)


def spatial_minmax(maps: Tensor, spatial_dims: int, eps: float = DEFAULT_EPS) -> Tensor:
    """Min-max normalise over the last ``spatial_dims`` dims: ``(x - min) / (max(x - min) + eps)``.

    A constant map becomes all zeros (never NaN).

    Args:
        maps: ``(..., *S)`` tensor.
        spatial_dims: how many trailing dims to normalise over.
        eps: added to the range.

    Returns:
        a new tensor of the same shape and dtype.

    """
    dims = tuple(range(maps.ndim - spatial_dims, maps.ndim))
    # fp16/bf16 in fp32: eps=1e-8 rounds to 0 in fp16, and a constant map would give 0/0
    work = maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps
    shifted = work - work.amin(dim=dims, keepdim=True)
    return (shifted / (shifted.amax(dim=dims, keepdim=True) + eps)).to(maps.dtype)


def minmax_normalize(cams: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Per-sample min-max normalisation of ``(N, *S)`` maps (see :func:`spatial_minmax`)."""
    return spatial_minmax(cams, cams.ndim - 1, eps)


def channel_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """Weighted channel sum ``nansum_c(w * A)``.

    Args:
        weights: ``(N, C)``, ``(1, C)`` or full-shape ``(N, C, *S)`` (LayerCAM) weights.
        activations: ``(N, C, *S)``.

    Returns:
        ``(N, *S)`` in the promoted dtype of the inputs.

    """
    weights = weights[(...,) + (None,) * (activations.ndim - weights.ndim)]
    return torch.nansum(weights * activations, dim=1)


def cam_step(
    weights: Tensor,
    activations: Tensor,
    *,
    relu: bool = True,
    output_size: Sequence[int] | None = None,
    normalize: bool = True,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The CAM step shared by every method: weighted channel sum -> upsample -> ReLU -> min-max.

    Args:
        weights: ``(N, C)``, ``(1, C)`` or ``(N, C, *S)``.
        activations: ``(N, C, *S)``.
        relu: clamp negative values (every method except base CAM).
        output_size: optional ``S_out``; the map is resized (``align_corners=False``) before ReLU/normalisation.
        normalize: per-sample min-max normalisation.
        eps: added to the range by the normalisation.

    Returns:
        ``(N, *S)`` or ``(N, *S_out)`` maps.

    """
    cam = channel_sum(weights, activations)
    if output_size is not None:
        cam = upsample(cam, output_size)
    if relu:
        cam = torch.relu(cam)
    if normalize:
        cam = minmax_normalize(cam, eps)
    return cam


def _spatial_flat(t: Tensor) -> Tensor:
    return t.flatten(2)


def gradcam_weights(grads: Tensor) -> Tensor:
    """Grad-CAM weights ``w = mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    return _spatial_flat(grads).mean(-1)


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """XGrad-CAM weights ``w = sum_S(g * A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    g, a = _spatial_flat(grads), _spatial_flat(activations)
    return (g * a).sum(-1) / (a.sum(-1) + eps)


def gradcampp_weights(
    grads: Tensor,
    activations: Tensor,
    eps: float = DEFAULT_EPS,
    *,
    grads_sq: Tensor | None = None,
    grads_cube: Tensor | None = None,
) -> Tensor:
    """Grad-CAM++ weights as documented (alpha, then weights).

    ``alpha = g2 / (2 g2 + sum_S(A) * g3 + eps)`` where ``g2 > 0``, else 0; ``w = sum_S(alpha * relu(g))``, with
    ``g2 = g^2`` and ``g3 = g^3`` unless averaged moments are given (Smooth Grad-CAM++ passes the means over its
    noisy samples).

    Args:
        grads: ``(N, C, *S)`` first derivatives ``g``.
        activations: ``(N, C, *S)`` activations ``A``.
        eps: added to the denominator.
        grads_sq: optional ``(N, C, *S)`` second-order term (default ``g^2``).
        grads_cube: optional ``(N, C, *S)`` third-order term (default ``g^3``).

    Returns:
        ``(N, C)`` weights.

    """
    g = _spatial_flat(grads)
    g2 = g * g if grads_sq is None else _spatial_flat(grads_sq)
    g3 = g2 * g if grads_cube is None else _spatial_flat(grads_cube)
    act_sum = _spatial_flat(activations).sum(-1, keepdim=True)
    denom = 2 * g2 + act_sum * g3 + eps
    alpha = torch.where(g2 > 0, g2 / torch.where(g2 > 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * torch.relu(g)).sum(-1)


def gradcampp_weights_torchcam(grads: Tensor) -> Tensor:
    """What TorchCAM 0.5.0's GradCAMpp really returns: ``w = sum_S(g^2 * relu(g))`` (its alpha division is lost).

    Args:
        grads: ``(N, C, *S)``.

    Returns:
        ``(N, C)`` weights.

    """
    g = _spatial_flat(grads)
    return (g * g * torch.relu(g)).sum(-1)


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
    """Score-CAM family masked inputs for the flattened (sample, channel) pairs ``start <= j < stop``.

    For ``j = n * C + c``: ``out[j - start] = scale * (U(minmax(A[n, c])) + noise[j - start]) * inputs[n]``, where
    ``minmax`` normalises one channel at feature resolution and ``U`` resizes it to the input size
    (``align_corners=False``). The mask broadcasts over the input channels.

    Args:
        activations: ``(N, C, *S)``.
        inputs: ``(N, Cin, *S_in)`` or ``(1, Cin, *S_in)`` (shared by every sample).
        start: first flattened pair.
        stop: one past the last flattened pair (``<= N * C``).
        noise: optional ``(stop - start, *S_in)`` additive mask noise (SSCAM).
        scale: multiplier of the masked input (ISCAM's integration coefficient).
        out_dtype: dtype of the result (default: the input's).
        channels_last: return a channels-last (2-D) / channels-last-3d (3-D) tensor.
        mode: interpolation mode; default: linear/bilinear/trilinear.
        eps: added to each channel's range.

    Returns:
        ``(stop - start, Cin, *S_in)`` masked inputs.

    """
    num_ch = activations.shape[1]
    spatial_dims = activations.ndim - 2
    pairs = torch.arange(start, stop, device=activations.device)
    samples = pairs // num_ch
    maps = activations.flatten(0, 1)[start:stop]
    masks = upsample(spatial_minmax(maps, spatial_dims, eps), inputs.shape[2:], mode)
    if noise is not None:
        masks = masks + noise.to(masks.dtype)
    base = inputs if inputs.shape[0] == 1 else inputs[samples]
    out = masks.unsqueeze(1) * base
    if scale != 1.0:
        out = out * scale
    out = out.to(out_dtype or inputs.dtype)
    if channels_last and spatial_dims in (2, 3):
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
        out = out.contiguous(memory_format=fmt)
    return out


def _byte_scale(values: Tensor) -> Tensor:
    """``255 * clamp(x, 0, 1) + 0.5`` in fp32 (fp64 for fp64) with NaN -> 0; truncation: round-half-up to 0..255.

    fp16/bf16 are widened first: in bf16, ``255 + 0.5`` rounds to 256, one past the blend-table row.
    """
    values = values if values.dtype == torch.float64 else values.float()
    return values.nan_to_num(0.0).clamp(0, 1).mul_(255).add_(0.5)


def _aten_taps(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """fp32 ``align_corners=False`` taps ``(i0, i1, l0, l1)``, op for op ``math::linear_tap`` (ATen's formulas).

    Unlike :func:`_source_index` (fp64, for :func:`upsample`), these are the fp32 taps of the compiled kernels, so
    :func:`overlay`'s truncated LUT index matches them bit for bit.
    """
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    if in_size == out_size:
        index = dst.long()
        return index, index, torch.ones_like(dst), torch.zeros_like(dst)
    scale = torch.tensor(float(in_size), device=device, dtype=torch.float32) / out_size
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0.0)
    i0 = src.long().clamp_max(in_size - 1)  # src >= 0: truncation is the floor
    lam = (src - i0).clamp(0.0, 1.0)
    return i0, (i0 + 1).clamp_max(in_size - 1), 1.0 - lam, lam


def _aten_resize_axis(maps: Tensor, dim: int, out_size: int) -> Tensor:
    """``v0 * l0 + v1 * l1`` along ``dim`` (separate, individually rounded ops, like ``math::lerp2``)."""
    i0, i1, l0, l1 = _aten_taps(maps.shape[dim], out_size, maps.device)
    shape = [1] * maps.ndim
    shape[dim] = out_size
    return maps.index_select(dim, i0) * l0.view(shape) + maps.index_select(dim, i1) * l1.view(shape)


def overlay(images: Tensor, cams: Tensor, table: Tensor) -> Tensor:
    """Blend colour-mapped CAMs over images through a blend table (the spec of the compiled ``overlay`` op).

    Per pixel and channel ``c``: ``v`` is the 8-bit pixel (uint8 as is; float: ``trunc(255 * clamp(x, 0, 1) + 0.5)``
    in fp32, fp64 for fp64 images, NaN -> 0), ``k = trunc(up(255 * clamp(cam, 0, 1) + 0.5))`` the LUT index (map in
    fp32 like ``cams.float()``, NaN -> 0; ``up``: bilinear resize to ``(H, W)`` with ``align_corners=False`` in fp32,
    W then H, ``v0 * l0 + v1 * l1`` with ATen's taps: the values of the compiled ``cam_step``), and
    ``out = table[c, 256 * k + v]``.

    Args:
        images: ``(N, 3, H, W)`` uint8, or float in ``[0, 1]``.
        cams: ``(N, h, w)`` float maps in ``[0, 1]``.
        table: ``(3, 65536)`` uint8 blend table on the images' device (``pycam_fast.utils`` builds it).

    Returns:
        ``(N, 3, H, W)`` uint8 overlays (contiguous).

    """
    num, _, height, width = images.shape
    up = _byte_scale(cams.float())  # fp64 maps are rounded to fp32 first
    for dim, size in ((2, width), (1, height)):
        up = _aten_resize_axis(up, dim, size)
    rows = up.to(torch.int32).mul_(256)  # (N, H, W) blend-table row offsets
    out = torch.empty((num, 3, height, width), dtype=torch.uint8, device=images.device)
    for channel in range(3):  # whole-batch ops only: few, large kernels
        pixels = images[:, channel]
        pixels = pixels.to(torch.int32) if pixels.dtype == torch.uint8 else _byte_scale(pixels).to(torch.int32)
        index = pixels.add_(rows)
        out[:, channel] = table[channel].index_select(0, index.reshape(-1)).view(index.shape)
    return out
