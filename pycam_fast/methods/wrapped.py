"""The base of extractors that wrap another one (RefineCAM, FinerCAM): its hooks, lifecycle and metadata."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Self

from torch import Tensor, nn

from .extractor import CAMExtractor

__all__ = ["WrappedExtractor"]


class WrappedExtractor:
    """Delegates the hooks and the lifecycle to ``base_cam`` (no hooks of its own).

    A subclass defines ``_maps(base, ...)``: its maps from ``base``, the base extractor's ``__call__`` (checked) or its
    ``compute_cams`` (unchecked). Its ``__call__`` and ``compute_cams`` take ``_maps``' other arguments.

    Args:
        base_cam: the wrapped extractor.

    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_maps" in cls.__dict__:
            cls.__call__ = _delegate(cls, "__call__", lambda base_cam: base_cam, cls._maps.__doc__)  # type: ignore[method-assign]
            doc = "As ``__call__`` without the base extractor's argument checks."
            cls.compute_cams = _delegate(cls, "compute_cams", lambda base_cam: base_cam.compute_cams, doc)  # type: ignore[attr-defined]

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


def _delegate(
    cls: type[WrappedExtractor], name: str, base: Callable[[CAMExtractor], Callable[..., list[Tensor]]], doc: str | None
) -> Callable[..., list[Tensor]]:
    """``cls``'s method ``name``: ``cls._maps`` with ``base(self.base_cam)``, and ``_maps``' signature less ``base``."""
    maps = cls._maps  # type: ignore[attr-defined]

    def method(self: WrappedExtractor, *args: Any, **kwargs: Any) -> list[Tensor]:
        return maps(self, base(self.base_cam), *args, **kwargs)

    signature = inspect.signature(maps)
    params = [param for param in signature.parameters.values() if param.name != "base"]
    method.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    method.__module__ = cls.__module__
    method.__name__, method.__qualname__, method.__doc__ = name, f"{cls.__qualname__}.{name}", doc
    return method
