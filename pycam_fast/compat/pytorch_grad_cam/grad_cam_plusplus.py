"""``pytorch_grad_cam.grad_cam_plusplus``: :class:`GradCAMPlusPlus`."""

from .cams import GradCAMPlusPlus

__all__ = ["GradCAMPlusPlus"]
