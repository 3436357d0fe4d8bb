"""CAM extractors with the API of TorchCAM 0.5, computing the documented formulas."""

from ..targets import OutputTarget
from .ablation import AblationCAM
from .activation import CAM, ISCAM, SSCAM, ScoreCAM
from .eigen import EigenCAM, EigenGradCAM
from .fem import FEM
from .gradient import GradCAM, GradCAMpp, LayerCAM, SmoothGradCAMpp, XGradCAM
from .gradient_variants import GradCAMElementWise, HiResCAM

__all__ = [
    "CAM",
    "AblationCAM",
    "FEM",
    "ISCAM",
    "SSCAM",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMpp",
    "HiResCAM",
    "LayerCAM",
    "OutputTarget",
    "ScoreCAM",
    "SmoothGradCAMpp",
    "XGradCAM",
]
