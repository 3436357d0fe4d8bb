"""``pytorch_grad_cam.ablation_cam_multilayer``, a legacy module of pytorch-grad-cam.

The same names, here the current :class:`AblationCAM`, :class:`AblationLayer` and :func:`replace_layer_recursive`.
"""

from .ablation_layer import AblationLayer
from .cams import AblationCAM
from .utils.find_layers import replace_layer_recursive

__all__ = ["AblationCAM", "AblationLayer", "replace_layer_recursive"]
