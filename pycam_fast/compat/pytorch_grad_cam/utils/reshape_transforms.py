"""Reshape transforms turning transformer tokens (or detector feature dicts) into ``(N, C, H, W)`` maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def _tokens_to_maps(tokens: Tensor, height: int, width: int) -> Tensor:
    """``(N, height * width, D) -> (N, D, height, width)``.

    Raises:
        ValueError: the token count is not ``height * width``.

    """
    if tokens.ndim != 3 or tokens.shape[1] != height * width:
        raise ValueError(
            f"expected (N, {height * width}, D) tokens for a {height}x{width} grid, got {tuple(tokens.shape)}: "
            "pass the grid's `height` and `width`"
        )
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """ViT tokens ``(N, 1 + H*W, D)``: drop the class token, return ``(N, D, H, W)``."""
    return _tokens_to_maps(tensor[:, 1:, :], height, width)


def swinT_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:  # noqa: N802
    """Swin tokens ``(N, H*W, D)`` (or an ``(N, H, W, D)`` stage output) to ``(N, D, H, W)``."""
    return _tokens_to_maps(tensor.reshape(tensor.shape[0], -1, tensor.shape[-1]), height, width)


def fasterrcnn_reshape_transform(x: dict[str, Tensor]) -> Tensor:
    """FPN feature dict: ``|features|`` of every level resized (bilinear) to the ``"pool"`` level, concatenated."""
    size = x["pool"].shape[-2:]
    return torch.cat([F.interpolate(value.abs(), size, mode="bilinear") for value in x.values()], dim=1)
