"""Logging shared by every layer: the ``pycam_fast`` logger and log-once messages."""

from __future__ import annotations

import logging

__all__ = ["log_once", "logger"]

logger = logging.getLogger("pycam_fast")
_LOGGED: set[str] = set()


def log_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` on the ``pycam_fast`` logger the first time only (fallbacks, skipped optimisations)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.log(level, message)
