"""TorchCAM 0.5.0's ``torchcam.methods.core``: the extractor base class and the ``OutputTarget`` alias."""

from __future__ import annotations

from ....methods.extractor import _CAM
from ....targets import OutputTarget

__all__ = ["OutputTarget", "_CAM"]
