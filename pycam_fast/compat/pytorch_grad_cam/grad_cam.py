"""``pytorch_grad_cam.grad_cam``: :class:`GradCAM`."""

from .cams import GradCAM

__all__ = ["GradCAM"]
