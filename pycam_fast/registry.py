"""Backend registry: which op implementations this install has, and which one a call uses.

A backend is a module-like object exposing the functions of :mod:`pycam_fast.reference` with the same signatures
(``cam_step``, ``gradcam_weights``, ``xgradcam_weights``, ``gradcampp_weights``, ``gradcampp_weights_torchcam``,
``masked_inputs``, ``overlay``). ``torch`` (the reference) always exists; compiled backends register a loader that
returns the implementation or raises :class:`BackendUnavailable` with the reason.

``auto`` picks, for a tensor's device, the fastest available backend from :data:`AUTO_PREFERENCE`; an explicitly
requested backend that cannot run on that device raises ``ValueError``; falling back is logged once per reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from . import reference
from ._auto_table import AUTO_TABLE, preferred_backend

__all__ = [
    "AUTO_PREFERENCE",
    "BackendUnavailable",
    "backends",
    "get_ops",
    "register_backend",
    "resolve_backend",
]

logger = logging.getLogger("pycam_fast")


class BackendUnavailable(RuntimeError):
    """Raised by a backend loader with the reason it cannot be used."""


@dataclass
class _Backend:
    name: str
    loader: Callable[[], Any]
    devices: tuple[str, ...]
    description: str
    _impl: Any = None
    _error: str | None = None
    _loaded: bool = False

    def load(self) -> Any:
        if not self._loaded:
            self._loaded = True
            try:
                self._impl = self.loader()
            except BackendUnavailable as exc:
                self._error = str(exc)
            except Exception as exc:  # a broken optional dependency must never break the import
                self._error = f"{type(exc).__name__}: {exc}"
        return self._impl

    def runs_on(self, device_type: str) -> bool:
        return device_type in self.devices or "*" in self.devices


_REGISTRY: dict[str, _Backend] = {}

#: Order in which ``backend="auto"`` tries backends, per device type (first available wins). On a device with a
#: measured table (``pycam_fast/_auto_table.py``, written by ``benchmarks/bench_triton.py``) ops are chosen per op.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cpu": ("cpp", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}

_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.info(message)


def register_backend(name: str, loader: Callable[[], Any], devices: tuple[str, ...], description: str) -> None:
    """Register a backend.

    Args:
        name: backend name used by ``backend=...``.
        loader: returns the implementation (an object with the reference op functions) or raises
            :class:`BackendUnavailable` explaining why it is missing.
        devices: device types it runs on (``"*"`` for any).
        description: one line shown by :func:`backends`.

    """
    _REGISTRY[name] = _Backend(name, loader, devices, description)


def backends() -> dict[str, dict[str, Any]]:
    """Report every known backend: whether this install has it, the devices it runs on, and why it is missing.

    Returns:
        ``{name: {"available": bool, "devices": [...], "description": str, "reason": str | None}}``.

    """
    report = {}
    for name, backend in _REGISTRY.items():
        impl = backend.load()
        report[name] = {
            "available": impl is not None,
            "devices": list(backend.devices),
            "description": backend.description,
            "reason": backend._error,
        }
    return report


def _available_for(device_type: str) -> list[str]:
    return [n for n, b in _REGISTRY.items() if b.runs_on(device_type) and b.load() is not None]


def validate_backend_name(backend: str) -> str:
    """Check a user-supplied backend name (not its availability on a device).

    Raises:
        ValueError: an unknown name, listing the known ones.

    """
    if not isinstance(backend, str) or (backend != "auto" and backend not in _REGISTRY):
        known = ", ".join(["auto", *_REGISTRY])
        raise ValueError(f"unknown backend {backend!r}; pass backend= one of: {known}")
    return backend


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Name of the backend that runs ops for tensors on ``device``.

    Args:
        backend: ``"auto"`` or a registered name.
        device: the device of the tensors.

    Returns:
        the backend name.

    Raises:
        ValueError: unknown backend, or an explicit backend that is unavailable for this device (the message lists
            the available ones and the reason).

    """
    validate_backend_name(backend)
    device_type = torch.device(device).type
    if backend == "auto":
        for name in AUTO_PREFERENCE.get(device_type, ("torch",)):
            entry = _REGISTRY.get(name)
            if entry is not None and entry.runs_on(device_type) and entry.load() is not None:
                return name
            if entry is not None and entry.runs_on(device_type):
                _log_once(f"backend {name!r} unavailable for {device_type} ({entry._error}); trying the next one")
        return "torch"
    entry = _REGISTRY[backend]
    if not entry.runs_on(device_type):
        raise ValueError(
            f"backend {backend!r} does not run on {device_type} tensors; available for {device_type}: "
            f"{_available_for(device_type)} (or backend='auto')"
        )
    if entry.load() is None:
        raise ValueError(
            f"backend {backend!r} is unavailable: {entry._error}; available for {device_type}: "
            f"{_available_for(device_type)} (or backend='auto')"
        )
    return backend


class _PerOpAuto:
    """``auto`` with a measured table: each op comes from the backend measured fastest for it on this device."""

    def __init__(self, device_type: str, default: str) -> None:
        self._device_type, self._default = device_type, default

    def __getattr__(self, op_name: str) -> Any:
        choice = preferred_backend(op_name, self._device_type)
        entry = _REGISTRY.get(choice) if choice else None
        if entry is None or not entry.runs_on(self._device_type) or entry.load() is None:
            entry = _REGISTRY[self._default]
        return getattr(entry.load(), op_name)


def get_ops(backend: str, device: torch.device | str) -> Any:
    """The op implementation (see :mod:`pycam_fast.reference`) for ``backend`` on ``device``.

    For ``auto`` on a device with a measured table (:mod:`pycam_fast._auto_table`), ops are picked one by one.
    """
    name = resolve_backend(backend, device)
    device_type = torch.device(device).type
    if backend == "auto" and AUTO_TABLE.get(device_type):
        return _PerOpAuto(device_type, name)
    return _REGISTRY[name].load()


def _load_torch() -> ModuleType:
    return reference


register_backend("torch", _load_torch, ("*",), "pure-torch reference ops (any device, any float dtype)")
