"""The user's model state that explaining it changes temporarily, restored on every exit path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["model_eval"]


@contextmanager
def model_eval(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, restoring each one's own training flag on exit (exceptions too)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training
