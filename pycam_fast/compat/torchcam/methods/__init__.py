"""TorchCAM 0.5.0's ``torchcam.methods``: every extractor, with TorchCAM's numbers (quirks included)."""

from .activation import *  # noqa: F403
from .activation import __all__ as _activation_all
from .core import OutputTarget as OutputTarget
from .gradient import *  # noqa: F403
from .gradient import __all__ as _gradient_all

__all__ = [*_activation_all, *_gradient_all, "OutputTarget"]
