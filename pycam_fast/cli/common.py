"""Helpers shared by the CLI commands: errors, versions, method names and image files."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

__all__ = [
    "CliError",
    "check_method",
    "print_error",
    "save_png",
    "versions",
    "write_json",
]

_PACKAGES = ("pycam_fast", "torch", "torchvision", "numpy", "pillow", "matplotlib", "torchcam", "grad-cam")


class CliError(Exception):
    """A setup or usage error: printed as one line on stderr, exit status 2."""


def print_error(message: str) -> None:
    """Print ``pycam-fast: error: <message>`` on one line of stderr."""
    print(f"pycam-fast: error: {' '.join(message.split())}", file=sys.stderr)


def versions() -> dict[str, str | None]:
    """Python and package versions (``None`` for packages that are not installed)."""
    report: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            report[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            report[name] = None
    return report


def check_method(name: str) -> str:
    """Validate a method name (TorchCAM class names, case-insensitive: ``GradCAMpp``, ``ScoreCAM``...).

    Returns:
        the engine's lower-case name.

    Raises:
        CliError: an unknown method, listing the known ones.

    """
    from ..engine.explainer import METHODS

    if name.lower() not in METHODS:
        raise CliError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)} (case-insensitive)")
    return name.lower()


def save_png(image: Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` uint8 tensor as a PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())).save(path)


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
