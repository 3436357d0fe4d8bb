"""TorchCAM 0.5.0's ``torchcam.methods.activation``: the activation-based extractors (same numbers as TorchCAM)."""

from __future__ import annotations

from ....methods import CAM, ISCAM, SSCAM, ScoreCAM

__all__ = ["CAM", "ISCAM", "SSCAM", "ScoreCAM"]
