"""Command-line interface: ``pycam-fast {demo,explain,explain-dataset,info,bench}`` (one module per command).

Each command module exposes ``add_parser(subparsers)`` (its argparse sub-parser) and ``run(args) -> int`` (the exit
status). :func:`main` runs in-process, so tests call ``main([...])`` directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, demo, explain, explain_dataset, info
from .common import CliError, print_error

__all__ = ["build_parser", "main"]

_COMMANDS = (demo, explain, explain_dataset, info, bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``pycam-fast`` parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="pycam-fast", description="Class Activation Maps for PyTorch, accelerated (drop-in for TorchCAM 0.5)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        the exit status: 0 on success, 1 when some inputs failed, 2 on a usage or setup error.

    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors and --help, kept in-process
        return int(exc.code or 0)
    try:
        return int(args.run(args))
    except CliError as exc:
        print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except BrokenPipeError:  # `pycam-fast ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
