"""``pytorch_grad_cam.ablation_cam``: :class:`AblationCAM`."""

from .cams import AblationCAM

__all__ = ["AblationCAM"]
