"""TorchCAM 0.5.0's ``torchcam.utils``: ``overlay_mask`` (same signature and pixels)."""

from __future__ import annotations

from ...utils import overlay_mask

__all__ = ["overlay_mask"]
