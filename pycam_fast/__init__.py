"""pycam_fast: compiled-kernel accelerated Class Activation Maps, with the API of TorchCAM 0.5."""

from importlib import import_module as _import_module
from types import ModuleType as _ModuleType

from . import _compiled as _compiled  # registers the "cpp" and "cuda" backends
from . import kernels as kernels  # registers the "triton" backend
from .engine import Explainer as Explainer
from .registry import backends

__version__ = "0.1.0"
__all__ = ["Explainer", "__version__", "backends", "compat", "methods", "utils"]


def __getattr__(name: str) -> _ModuleType:
    if name in {"methods", "utils", "compat"}:
        module = _import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
