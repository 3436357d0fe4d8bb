"""Drop-in replacement for ``pytorch_grad_cam`` (grad-cam 1.5.7): same names, call style and outputs.

Example:
    >>> from pycam_fast.compat.pytorch_grad_cam import GradCAM
    >>> from pycam_fast.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    >>> with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
    ...     maps = cam(x, targets=[ClassifierOutputTarget(281)])  # (N, H, W) float32 numpy

"""

from . import utils
from .base_cam import BaseCAM
from .cams import *  # noqa: F403 (the method classes: cams.__all__)
from .cams import __all__ as _method_names

__all__ = ["BaseCAM", "utils", *_method_names]
