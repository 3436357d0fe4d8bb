"""``pycam-fast info``: versions, backends (and why some are missing), extension build and devices."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .common import add_command, versions

__all__ = ["add_parser", "run"]


#: ``pycam-fast info``'s line in ``pycam-fast --help`` and paragraph in its own ``--help``
_HELP = "versions, available backends, extension build info, devices"
_DESCRIPTION = """
Print the versions of Python, pycam_fast and the related packages (torch, torchvision, the peers TorchCAM,
pytorch-grad-cam and Captum: 'not installed' when absent), every ops backend (torch, cpp, cuda, triton) with the devices
it runs on or why it is missing, how the compiled extension was built (CUDA kernels or CPU only), and the devices torch
sees. Paste it into bug reports.
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``info`` sub-command."""
    add_command(subparsers, "info", run, _HELP, _DESCRIPTION)


def _devices() -> list[str]:
    """One line per device torch can use."""
    lines = [f"cpu: {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB, sm_{props.major}{props.minor}")
    else:
        lines.append(f"cuda: not available (torch built with CUDA {torch.version.cuda})")
    return lines


def _build_info() -> dict[str, Any]:
    """The compiled extension's build info (or why it is unavailable)."""
    try:
        from ..ops.compiled import build_info

        return build_info()
    except Exception as exc:  # a broken install must not break `info`
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}


def run(args: argparse.Namespace) -> int:
    """Print the report; returns 0."""
    from ..ops import backends

    print("versions:")
    for name, version in versions().items():
        print(f"  {name:<12} {version or 'not installed'}")
    print("backends:")
    for name, entry in backends().items():
        state = "available" if entry["available"] else f"missing: {entry['reason']}"
        print(f"  {name:<8} [{', '.join(entry['devices'])}] {state}")
    print("extension (pycam_fast._C):")
    for key, value in _build_info().items():
        print(f"  {key}: {', '.join(value) if isinstance(value, (tuple, list)) else value}")
    print("devices:")
    for line in _devices():
        print(f"  {line}")
    return 0
