"""Noise for the stochastic methods, drawn like TorchCAM 0.5.0 (same draws for the same seed)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_noise"]


def gaussian_noise(shape: torch.Size | tuple[int, ...], std: float) -> Tensor:
    """``N(0, std^2)`` noise of ``shape`` on the CPU, from the default generator (``torch.manual_seed`` applies).

    TorchCAM draws with ``torch.distributions.Normal(0, std).sample(shape)``; drawing the same way keeps every
    noisy sample identical to TorchCAM's for the same seed. Move the result to the device yourself.
    """
    return torch.distributions.Normal(0.0, std).sample(torch.Size(shape))
