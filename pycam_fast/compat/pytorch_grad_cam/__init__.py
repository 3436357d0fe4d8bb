"""Drop-in replacement for ``pytorch_grad_cam`` (grad-cam 1.5.7): same names, module paths, call style and outputs.

Example:
    >>> from pycam_fast.compat.pytorch_grad_cam import GradCAM
    >>> from pycam_fast.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    >>> with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
    ...     maps = cam(x, targets=[ClassifierOutputTarget(281)])  # (N, H, W) float32 numpy

Every per-method module of pytorch-grad-cam exists here too (``pycam_fast.compat.pytorch_grad_cam.grad_cam``,
``.fullgrad_cam``, ``.ablation_layer``, ...), as do ``utils.find_layers`` and ``utils.svd_on_activations``.

"""

from . import utils
from .ablation_layer import AblationLayer, AblationLayerFasterRCNN, AblationLayerVit
from .activations_and_gradients import ActivationsAndGradients
from .base_cam import BaseCAM
from .cams import *  # noqa: F403 (the method classes: cams.__all__)
from .cams import __all__ as _method_names
from .feature_factorization.deep_feature_factorization import DeepFeatureFactorization, run_dff_on_image
from .finer_cam import FinerCAM
from .fullgrad_cam import FullGrad
from .guided_backprop import GuidedBackpropReLUModel
from .kpca_cam import KPCA_CAM
from .random_cam import RandomCAM
from .refine_cam import RefineCAM
from .seg_eigen_cam import SegEigenCAM
from .sess import SESS
from .shapley_cam import ShapleyCAM
from .utils import model_targets, reshape_transforms

__all__ = [
    "KPCA_CAM",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "ActivationsAndGradients",
    "BaseCAM",
    "DeepFeatureFactorization",
    "FinerCAM",
    "FullGrad",
    "GuidedBackpropReLUModel",
    "RandomCAM",
    "RefineCAM",
    "SESS",
    "SegEigenCAM",
    "ShapleyCAM",
    "model_targets",
    "reshape_transforms",
    "run_dff_on_image",
    "utils",
    *_method_names,
]
