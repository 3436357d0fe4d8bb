"""SS-CAM ("SS-CAM: Smoothed Score-CAM", Wang et al. 2020): Score-CAM with noisy masks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .noise import gaussian_noise
from .scorecam import MaskedForwardExtractor, score_terms
from .spec import define_method

__all__ = ["SSCAM", "SSCAM_SPEC", "sscam_passes"]


class _NoiseDraw:
    """One pass's noise, drawn on first use so passes draw in TorchCAM's order (one full draw each)."""

    def __init__(self, shape: tuple[int, ...], std: float, device: torch.device) -> None:
        self._shape, self._std, self._device = shape, std, device
        self._noise: Tensor | None = None

    def __getitem__(self, index: Any) -> Tensor:
        if self._noise is None:
            self._noise = gaussian_noise(self._shape, self._std).to(self._device)
        return self._noise[index]


def sscam_passes(activations: Tensor, inputs: Tensor, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """SS-CAM's passes: ``num_samples`` lazily drawn ``(N * C, *S_in)`` mask-noise tensors of std ``std``."""
    shape = (activations.shape[0] * activations.shape[1], *inputs.shape[2:])
    return [{"noise": _NoiseDraw(shape, options["std"], activations.device)} for _ in range(options["num_samples"])]


SSCAM_SPEC = define_method(
    "SSCAM",
    "score",
    score_terms,
    "Score-CAM with masks U(minmax(A_k)) + N(0, std^2), scores averaged over num_samples draws",
    options={"num_samples": 35, "std": 2.0, "top_k": None},
    passes=sscam_passes,
)


class SSCAM(MaskedForwardExtractor):
    r"""SS-CAM: Score-CAM with ``num_samples`` noisy masks ``U(norm(A_k)) + N(0, std^2)``.

    The noise is at input resolution, drawn from the default CPU generator as TorchCAM does; scores are averaged
    over the samples before the softmax.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        batch_size: number of masked inputs per forward.
        num_samples: number of noise draws.
        std: standard deviation of the mask noise.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``, ``top_k``.

    """

    spec = SSCAM_SPEC
    positional_arguments = ("batch_size", "num_samples", "std", "input_shape")
