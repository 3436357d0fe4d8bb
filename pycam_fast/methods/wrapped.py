"""The base of extractors that wrap another one (RefineCAM, FinerCAM): its hooks, lifecycle and metadata."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Self

from torch import nn

from .extractor import CAMExtractor

__all__ = ["WrappedExtractor"]


class WrappedExtractor:
    """Delegates the hooks and the lifecycle to ``base_cam`` (no hooks of its own).

    Args:
        base_cam: the wrapped extractor.

    """

    def __init__(self, base_cam: CAMExtractor) -> None:
        self.base_cam = base_cam

    @property
    def model(self) -> nn.Module:
        """The model the base extractor hooks."""
        return self.base_cam.model

    @property
    def target_names(self) -> list[str]:
        """The base extractor's target layer names."""
        return self.base_cam.target_names

    @property
    def hook_handles(self) -> list:
        """The base extractor's hook handles."""
        return self.base_cam.hook_handles

    def enable_hooks(self) -> None:
        """Enable the base extractor's hooks."""
        self.base_cam.enable_hooks()

    def disable_hooks(self) -> None:
        """Disable the base extractor's hooks."""
        self.base_cam.disable_hooks()

    def reset_hooks(self) -> None:
        """Clear what the base extractor recorded."""
        self.base_cam.reset_hooks()

    def remove_hooks(self) -> None:
        """Remove the base extractor's hooks (idempotent)."""
        self.base_cam.remove_hooks()

    def _hooks_off(self) -> AbstractContextManager[None]:
        return self.base_cam._hooks_off()

    def __enter__(self) -> Self:
        self.base_cam.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.base_cam.__exit__(*exc_info)
