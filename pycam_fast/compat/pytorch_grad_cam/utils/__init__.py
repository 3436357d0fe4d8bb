"""pytorch-grad-cam's ``utils``: output targets, image helpers and reshape transforms."""

from . import image, model_targets, reshape_transforms

__all__ = ["image", "model_targets", "reshape_transforms"]
