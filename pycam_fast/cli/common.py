"""Helpers shared by the CLI commands: errors, versions, method names and image files."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

__all__ = [
    "CliError",
    "add_command",
    "add_progress_option",
    "add_seed_option",
    "check_method",
    "choices_text",
    "method_choices",
    "print_error",
    "progress_wanted",
    "save_png",
    "versions",
    "write_json",
]

_PACKAGES = (
    "pycam_fast",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "matplotlib",
    "tqdm",
    "torchcam",
    "grad-cam",
    "captum",
    "triton",
)


class CliError(Exception):
    """A setup or usage error: printed as one line on stderr, exit status 2."""


def add_command(
    subparsers: Any, name: str, run: Callable[[Any], int], help: str, description: str
) -> argparse.ArgumentParser:
    """Register a sub-command whose parsed arguments go to ``run(args) -> exit status``.

    Args:
        subparsers: the ``pycam-fast`` parser's sub-parsers action.
        name: the command's name (``"info"``).
        run: called with the parsed arguments (set as the ``run`` default).
        help: the one-line help in ``pycam-fast --help``.
        description: the paragraph of ``pycam-fast NAME --help`` (argparse folds its white space).

    Returns:
        the command's parser, for its arguments.

    """
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(run=run)
    return parser


def add_seed_option(parser: Any) -> None:
    """``--seed``: of the ``torchvision:NAME`` random weights and of the noisy methods."""
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of torchvision:NAME random weights and noisy methods (default: 0)"
    )


def add_progress_option(parser: Any, bars: str) -> None:
    """``--progress auto|on|off``; ``bars`` says what the progress bars show (help text)."""
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help=f"{bars}: auto = only on a terminal (default: %(default)s)",
    )


def progress_wanted(progress: str) -> bool:
    """Whether ``--progress`` asks for bars here: ``on``, or ``auto`` with stderr on a terminal."""
    return progress == "on" or (progress == "auto" and sys.stderr.isatty())


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


def check_method(name: str, hooked: bool = False) -> str:
    """Validate a method name against the registry (:func:`pycam_fast.methods.method_names`, case-insensitive).

    Args:
        name: the method's name, any case.
        hooked: also accept the hook-based methods (:data:`pycam_fast.engine.hooked.HOOKED_METHODS`).

    Returns:
        the method's registered name (``"gradcampp"`` -> ``"GradCAMpp"``).

    Raises:
        CliError: an unknown method, listing the accepted ones.

    """
    from ..engine.hooked import hooked_method
    from ..methods import get_method

    found = hooked_method(name) if hooked else None
    if found is not None:
        return found
    try:
        return get_method(name).name
    except ValueError:
        raise CliError(f"unknown method {name!r}; choose one of: {method_choices(hooked)} (case-insensitive)") from None


def method_choices(hooked: bool = False) -> str:
    """The registered methods (and with ``hooked`` the hook-based ones), comma-separated (for ``--help``)."""
    from ..engine.hooked import HOOKED_METHODS
    from ..methods import method_names

    return ", ".join([*method_names(), *(HOOKED_METHODS if hooked else ())])


def choices_text(values: list[str], limit: int = 60) -> str:
    """``a, b, c`` (at most ``limit`` values, then ``... (N in all)``)."""
    shown = ", ".join(values[:limit])
    return shown if len(values) <= limit else f"{shown}, ... ({len(values)} in all)"


def save_png(image: Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` uint8 tensor as a PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())).save(path)


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
