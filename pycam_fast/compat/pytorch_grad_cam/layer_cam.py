"""``pytorch_grad_cam.layer_cam``: :class:`LayerCAM`."""

from .cams import LayerCAM

__all__ = ["LayerCAM"]
