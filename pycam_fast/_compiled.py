"""Compiled backends (``cpp`` for CPU tensors, ``cuda`` for CUDA tensors): placeholder until ``csrc/`` lands."""

from .backends import BackendUnavailable, register_backend


def _missing() -> None:
    raise BackendUnavailable("the C++/CUDA extension is not part of this build yet")


register_backend("cpp", _missing, ("cpu",), "fused C++ kernels (CPU)")
register_backend("cuda", _missing, ("cuda",), "fused CUDA kernels")
