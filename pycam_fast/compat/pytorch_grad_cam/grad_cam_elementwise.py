"""``pytorch_grad_cam.grad_cam_elementwise``: :class:`GradCAMElementWise`."""

from .cams import GradCAMElementWise

__all__ = ["GradCAMElementWise"]
