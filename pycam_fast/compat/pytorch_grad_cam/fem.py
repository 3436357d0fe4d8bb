"""``pytorch_grad_cam.fem``: :class:`FEM`."""

from .cams import FEM

__all__ = ["FEM"]
