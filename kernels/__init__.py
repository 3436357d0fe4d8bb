"""Triton kernels for the fused CAM ops (shipped as ``pycam_fast.kernels``).

Importing this package registers the ``triton`` backend without importing Triton: the loader imports it (and the
kernel modules) on first use, so ``import pycam_fast`` works without Triton and the backend reports why it is
unavailable (Triton missing, or no CUDA device outside the interpreter).

The backend runs on CUDA tensors, and also on CPU tensors when ``TRITON_INTERPRET=1`` is set before the backend is
first loaded (Triton's interpreter; how CI tests the kernels). Files: ``cam_step.py``, ``grad_weights.py``,
``masked_inputs.py`` (one kernel family each), ``ops.py`` (``torch.library`` custom ops), ``backend.py`` (the
backend object).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from pycam_fast.registry import BackendUnavailable, register_backend

__all__ = ["interpreting", "register"]

_DESCRIPTION = "Triton kernels (CUDA; CPU under TRITON_INTERPRET=1)"


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (Triton kernels run on CPU tensors, slowly)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _load() -> ModuleType:
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        raise BackendUnavailable(f"triton is not installed ({exc}); `pip install triton` (CUDA only)") from exc
    if not interpreting():
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU, for testing)")
    return importlib.import_module(f"{__name__}.backend")


def register() -> None:
    """(Re-)register the ``triton`` backend, reading ``TRITON_INTERPRET`` now for the device list."""
    devices = ("cuda", "cpu") if interpreting() else ("cuda",)
    register_backend("triton", _load, devices, _DESCRIPTION)


register()
