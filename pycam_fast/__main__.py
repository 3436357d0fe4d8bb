"""``python -m pycam_fast`` / ``pycam-fast``: the command-line interface (see :mod:`pycam_fast.cli`)."""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
