"""``pytorch_grad_cam.eigen_grad_cam``: :class:`EigenGradCAM`."""

from .cams import EigenGradCAM

__all__ = ["EigenGradCAM"]
