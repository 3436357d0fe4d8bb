"""High-throughput CAM engine: ``Explainer`` owns the forward pass (tail-only gradients, fast masked forwards)."""

from typing import Any

__all__ = ["Explainer"]


def __getattr__(name: str) -> Any:
    # Lazy: pycam_fast.methods imports engine submodules, and the explainer imports pycam_fast.methods
    if name == "Explainer":
        from .explainer import Explainer

        return Explainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
