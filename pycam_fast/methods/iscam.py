"""IS-CAM ("IS-CAM: Integrated Score-CAM", Naidu et al. 2020): Score-CAM over scaled inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .scorecam import MaskedForwardExtractor, score_terms
from .spec import define_method

__all__ = ["ISCAM", "ISCAM_SPEC", "iscam_passes"]


def iscam_passes(_activations: Tensor, _inputs: Tensor, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """IS-CAM's passes: input scales ``c_i = sum_{j <= i} j / N``, accumulated in Python floats as TorchCAM does."""
    num, coeff, passes = options["num_samples"], 0.0, []
    for step in range(num):
        coeff += (step + 1) / num
        passes.append({"scale": coeff})
    return passes


ISCAM_SPEC = define_method(
    "ISCAM",
    "score",
    score_terms,
    "Score-CAM with the masked input scaled by c_i = sum_{j<=i} j / N, scores averaged over N steps",
    options={"num_samples": 10, "top_k": None},
    passes=iscam_passes,
)


class ISCAM(MaskedForwardExtractor):
    r"""IS-CAM: Score-CAM with the masked input scaled by ``c_i = sum_{j<=i} j / N`` (0.1, 0.3, 0.6, ... for 10).

    Scores are averaged over the ``num_samples`` steps before the softmax.

    Args:
        model: the model to explain.
        target_layer: a module, its dotted name, a list of those, or ``None`` (automatic).
        batch_size: number of masked inputs per forward.
        num_samples: number of integration steps.
        input_shape: one sample's input shape, used by the automatic layer resolution.
        kwargs: ``enable_hooks``, ``reshape_transform``, ``backend``, ``top_k``.

    """

    spec = ISCAM_SPEC
    positional_arguments = ("batch_size", "num_samples", "input_shape")
