"""pycam_fast: compiled-kernel accelerated Class Activation Maps, with the API of TorchCAM 0.5."""

from . import compat, methods, ops, utils
from .dataset import open_results
from .engine import Explainer
from .ops import backends

__version__ = "0.1.0"
__all__ = ["Explainer", "__version__", "backends", "compat", "methods", "open_results", "ops", "utils"]
