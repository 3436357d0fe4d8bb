"""``pytorch_grad_cam.eigen_cam``: :class:`EigenCAM`."""

from .cams import EigenCAM

__all__ = ["EigenCAM"]
