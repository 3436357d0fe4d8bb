"""High-throughput CAM engine: ``Explainer`` owns the forward pass (tail-only gradients, fast masked forwards)."""

from .explainer import Explainer as Explainer

__all__ = ["Explainer"]
