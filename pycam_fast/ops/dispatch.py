"""The one dispatcher: which backend runs an op for the tensors' device, and every fallback, logged once.

A backend registers a loader returning ``{op name: Impl}`` (or raising :class:`BackendUnavailable` with the reason).
``torch`` (the reference) always exists and takes every input. For a call, :func:`run`:

1. resolves ``backend=``: ``"auto"`` takes, per op, the backend of the measured table for the device
   (``auto_table.json``, written by the benchmarks), else the first available of :data:`AUTO_PREFERENCE`, logging
   once why a preferred backend is unavailable; an explicit backend that cannot run on the device raises
   ``ValueError`` naming the available ones;
2. hands inputs the chosen implementation does not take (inputs that need autograd — the kernels have no backward —
   or what its ``unsupported`` predicate reports, e.g. float64 for Triton) to the reference, logging the reason once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import Tensor

from .._log import log_once
from . import reference
from .schemas import OP_NAMES

__all__ = [
    "AUTO_PREFERENCE",
    "BackendUnavailable",
    "Impl",
    "auto_table",
    "backends",
    "register_backend",
    "resolve",
    "run",
    "validate_backend_name",
]


class BackendUnavailable(RuntimeError):
    """Raised by a backend loader with the reason it cannot be used."""


def _takes_anything(*_: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Impl:
    """One backend's implementation of one op.

    Attributes:
        fn: takes the op's arguments positionally, in schema order.
        unsupported: same arguments; returns why ``fn`` does not take them (the reference runs instead), or ``None``.

    """

    fn: Callable[..., Tensor]
    unsupported: Callable[..., str | None] = _takes_anything


@dataclass
class _Backend:
    name: str
    loader: Callable[[], dict[str, Impl]]
    devices: tuple[str, ...]
    description: str
    impls: dict[str, Impl] | None = None
    error: str | None = None
    loaded: bool = field(default=False, repr=False)

    def load(self) -> dict[str, Impl] | None:
        if not self.loaded:
            self.loaded = True
            try:
                self.impls = self.loader()
            except BackendUnavailable as exc:
                self.error = str(exc)
            except Exception as exc:  # a broken optional dependency must never break the import
                self.error = f"{type(exc).__name__}: {exc}"
        return self.impls

    def runs_on(self, device_type: str) -> bool:
        return device_type in self.devices or "*" in self.devices


_REGISTRY: dict[str, _Backend] = {}

#: Order in which ``backend="auto"`` tries backends per device type, for ops the measured table does not name.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cpu": ("cpp", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}

_AUTO_CACHE: dict[tuple[str, str], str] = {}


def register_backend(
    name: str, loader: Callable[[], dict[str, Impl]], devices: tuple[str, ...], description: str
) -> None:
    """Register (or replace) a backend.

    Args:
        name: backend name used by ``backend=...``.
        loader: returns ``{op name: Impl}`` for the ops it implements, or raises :class:`BackendUnavailable` saying
            why it is missing. Called once, on first use.
        devices: device types it runs on (``"*"`` for any).
        description: one line shown by :func:`backends`.

    """
    _REGISTRY[name] = _Backend(name, loader, devices, description)
    _AUTO_CACHE.clear()


def backends() -> dict[str, dict[str, Any]]:
    """Report every known backend: whether this install has it, the devices it runs on, and why it is missing.

    Returns:
        ``{name: {"available": bool, "devices": [...], "description": str, "reason": str | None}}``.

    """
    return {
        name: {
            "available": backend.load() is not None,
            "devices": list(backend.devices),
            "description": backend.description,
            "reason": backend.error,
        }
        for name, backend in _REGISTRY.items()
    }


def auto_table() -> dict[str, Any]:
    """The measured per-op preference, ``auto_table.json``: ``{"measured_on": str, "ops": {device: {op: backend}}}``."""
    text = resources.files(__package__).joinpath("auto_table.json").read_text()
    return json.loads(text)


_TABLE = auto_table()["ops"]


def validate_backend_name(backend: Any) -> str:
    """Check a user-supplied backend name (not its availability on a device).

    Raises:
        ValueError: an unknown name, listing the known ones.

    """
    if not isinstance(backend, str) or (backend != "auto" and backend not in _REGISTRY):
        known = ", ".join(["auto", *_REGISTRY])
        raise ValueError(f"unknown backend {backend!r}; pass backend= one of: {known}")
    return backend


def _usable(name: str | None, device_type: str, op: str | None = None) -> bool:
    entry = _REGISTRY.get(name) if name else None
    impls = entry.load() if entry is not None and entry.runs_on(device_type) else None
    return impls is not None and (op is None or op in impls)


def _available_for(device_type: str) -> list[str]:
    return [name for name in _REGISTRY if _usable(name, device_type)]


def _auto(op: str, device_type: str) -> str:
    key = (op, device_type)
    if key not in _AUTO_CACHE:
        measured = _TABLE.get(device_type, {}).get(op)
        order = ((measured,) if measured else ()) + AUTO_PREFERENCE.get(device_type, ())
        choice = "torch"
        for name in order:
            if _usable(name, device_type, op):
                choice = name
                break
            entry = _REGISTRY.get(name)
            if entry is not None and entry.runs_on(device_type) and entry.load() is None:
                log_once(f"pycam_fast: backend {name!r} unavailable for {device_type} ({entry.error}); trying the next")
        _AUTO_CACHE[key] = choice
    return _AUTO_CACHE[key]


def resolve(backend: str, device: torch.device | str, op: str = "cam_step") -> str:
    """Name of the backend that runs ``op`` for tensors on ``device``.

    Args:
        backend: ``"auto"`` or a registered name.
        device: the device of the tensors.
        op: the op (``auto`` may pick per op).

    Raises:
        ValueError: unknown backend, or an explicit backend that is unavailable for this device (the message lists
            the available ones and the reason).

    """
    validate_backend_name(backend)
    device_type = torch.device(device).type
    if backend == "auto":
        return _auto(op, device_type)
    entry = _REGISTRY[backend]
    if not entry.runs_on(device_type):
        raise ValueError(
            f"backend {backend!r} does not run on {device_type} tensors; available for {device_type}: "
            f"{_available_for(device_type)} (or backend='auto')"
        )
    if entry.load() is None:
        raise ValueError(
            f"backend {backend!r} is unavailable: {entry.error}; available for {device_type}: "
            f"{_available_for(device_type)} (or backend='auto')"
        )
    return backend


def _needs_autograd(args: tuple[Any, ...]) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)


def run(op: str, backend: str, args: tuple[Any, ...]) -> Tensor:
    """Run ``op`` on the backend ``backend`` resolves to for the device of ``args[0]``.

    Args:
        op: an op name of :mod:`pycam_fast.ops.schemas`.
        backend: ``"auto"`` or a backend name.
        args: the op's arguments, positional in schema order, already validated and dtype-promoted.

    Returns:
        the op's result.

    """
    name = resolve(backend, args[0].device, op)
    if name != "torch":
        impl = _REGISTRY[name].impls.get(op)  # type: ignore[union-attr]
        if impl is None:
            reason = "it has no kernel for this op"
        else:
            reason = "the inputs need autograd" if _needs_autograd(args) else impl.unsupported(*args)
            if reason is None:
                return impl.fn(*args)
        # under "auto" this routing is expected (e.g. float64 on Triton): info; an explicit request: warning
        level = logging.INFO if backend == "auto" else logging.WARNING
        log_once(f"pycam_fast: {op} on the {name!r} backend: {reason}; using the torch reference", level)
    return getattr(reference, op)(*args)


def _load_torch() -> dict[str, Impl]:
    return {op: Impl(getattr(reference, op)) for op in OP_NAMES}


register_backend("torch", _load_torch, ("*",), "pure-torch reference ops (any device, any float dtype)")
