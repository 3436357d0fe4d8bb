"""``pytorch_grad_cam.hirescam``: :class:`HiResCAM`."""

from .cams import HiResCAM

__all__ = ["HiResCAM"]
