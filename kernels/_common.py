"""Helpers shared by the Triton kernels: strided spatial indexing and ``align_corners=False`` source indices.

Every kernel sees the spatial dims of its tensors as ``(D, H, W)``: 1-D maps are ``(1, 1, W)`` and 2-D maps
``(1, H, W)``, with stride 0 for the padded dims. One kernel body then serves 1-D, 2-D and 3-D, and non-contiguous
inputs (channels-last, slices, transposes) are read in place through their strides instead of being copied.
"""

# Triton convention: sizes and constexpr kernel arguments in capitals (BLOCK_P, H, W, ...).
# ruff: noqa: N803

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "KERNEL_DTYPES",
    "interp_scales",
    "is_flat_contiguous",
    "lerp_source",
    "pad3",
    "spatial_offset",
    "spatial_strides",
]

#: dtypes the kernels take (the backend hands float64 to the reference: the kernels accumulate in fp32).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pad3(sizes: Sequence[int]) -> tuple[int, int, int]:
    """Left-pad 1-3 spatial sizes with ones to ``(D, H, W)``."""
    sizes = tuple(int(s) for s in sizes)
    return (1,) * (3 - len(sizes)) + sizes  # type: ignore[return-value]


def spatial_strides(t: Tensor, first: int) -> tuple[int, int, int]:
    """Strides of ``t``'s dims ``first..`` (1-3 spatial dims) left-padded with zeros to ``(D, H, W)``."""
    strides = tuple(t.stride()[first:])
    return (0,) * (3 - len(strides)) + strides  # type: ignore[return-value]


def is_flat_contiguous(t: Tensor, first: int) -> bool:
    """Whether dims ``first..`` of ``t`` can be addressed by one flat index (offset == flat index)."""
    expected = 1
    for size, stride in zip(reversed(t.shape[first:]), reversed(t.stride()[first:]), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def interp_scales(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> tuple[float, float, float]:
    """Per-dim ``in / out`` scales of ``F.interpolate(size=..., align_corners=False)``, padded to ``(D, H, W)``.

    PyTorch computes the scale as a float32 division; numpy float32 division is the same correctly rounded value,
    which a Python (float64) division rounded to float32 is not always.
    """
    return tuple(  # type: ignore[return-value]
        float(np.float32(i) / np.float32(o)) for i, o in zip(pad3(in_sizes), pad3(out_sizes), strict=True)
    )


@triton.jit
def spatial_offset(p, H, W, stride_d, stride_h, stride_w, CONTIG: tl.constexpr):
    """Element offset of the flat spatial index ``p`` over ``(D, H, W)`` given the strides.

    ``CONTIG`` skips the two integer divisions (about 20 instructions each on NVIDIA GPUs) when the spatial dims
    are packed.
    """
    if CONTIG:
        off = p
    else:
        w = p % W
        h = (p // W) % H
        d = p // (W * H)
        off = d * stride_d + h * stride_h + w * stride_w
    return off


@triton.jit
def lerp_source(o, in_size, scale):
    """Source indices and weights of output index ``o`` for ``align_corners=False`` linear resizing.

    Same arithmetic as ATen's ``area_pixel_compute_source_index`` + ``guard_index_and_lambda``:
    ``src = max(scale * (o + 0.5) - 0.5, 0)``, ``i0 = min(floor(src), in - 1)``, ``i1 = i0 + (i0 < in - 1)``,
    ``l1 = clamp(src - i0, 0, 1)`` (0 where ``i1 == i0``), ``l0 = 1 - l1``.

    Returns:
        ``(i0, i1, l0, l1)``.

    """
    src = tl.maximum(scale * (o.to(tl.float32) + 0.5) - 0.5, 0.0)
    i0 = tl.minimum(src.to(tl.int32), in_size - 1)  # src >= 0, so the truncating cast is floor
    i1 = i0 + (i0 < in_size - 1).to(tl.int32)
    l1 = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    l0 = 1.0 - l1
    return i0, i1, l0, l1
