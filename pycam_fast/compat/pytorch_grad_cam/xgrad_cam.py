"""``pytorch_grad_cam.xgrad_cam``: :class:`XGradCAM`."""

from .cams import XGradCAM

__all__ = ["XGradCAM"]
