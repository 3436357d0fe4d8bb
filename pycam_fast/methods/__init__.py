"""CAM methods with the API of TorchCAM 0.5, computing the documented formulas.

One module per method: it defines the method once (a :class:`~.spec.MethodSpec` registered by name, which the
Explainer, the CLI and the drop-in layers use) and its TorchCAM-style class. A new method is one new module plus
its import line below.
"""

from ..targets import OutputTarget as OutputTarget
from .ablation import AblationCAM as AblationCAM

# -- the methods (registration order = the order front-ends list them) --------------------------------------------
from .cam import CAM as CAM
from .eigencam import EigenCAM as EigenCAM
from .eigengradcam import EigenGradCAM as EigenGradCAM
from .extractor import _CAM as _CAM
from .extractor import CAMExtractor as CAMExtractor
from .fem import FEM as FEM
from .finercam import FinerCAM as FinerCAM
from .gradcam import GradCAM as GradCAM
from .gradcam_elementwise import GradCAMElementWise as GradCAMElementWise
from .gradcampp import GradCAMpp as GradCAMpp
from .hirescam import HiResCAM as HiResCAM
from .iscam import ISCAM as ISCAM
from .layercam import LayerCAM as LayerCAM
from .legrad import LeGrad as LeGrad
from .refinecam import RefineCAM as RefineCAM
from .scorecam import ScoreCAM as ScoreCAM
from .smooth_gradcampp import SmoothGradCAMpp as SmoothGradCAMpp
from .spec import CamTerms as CamTerms
from .spec import LayerInputs as LayerInputs
from .spec import MethodSpec as MethodSpec
from .spec import get_method as get_method
from .spec import method_names as method_names
from .spec import register_method as register_method
from .sscam import SSCAM as SSCAM
from .xgradcam import XGradCAM as XGradCAM

__all__ = [
    "CAMExtractor",
    "FinerCAM",
    "LeGrad",
    "RefineCAM",
    "CamTerms",
    "LayerInputs",
    "MethodSpec",
    "OutputTarget",
    "get_method",
    "method_names",
    "register_method",
    *method_names(),
]
