"""CAM extractors with the API of TorchCAM 0.5, computing the documented formulas."""

from ..targets import OutputTarget
from .activation import CAM, ISCAM, SSCAM, ScoreCAM
from .gradient import GradCAM, GradCAMpp, LayerCAM, SmoothGradCAMpp, XGradCAM

__all__ = [
    "CAM",
    "ISCAM",
    "SSCAM",
    "GradCAM",
    "GradCAMpp",
    "LayerCAM",
    "OutputTarget",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]
