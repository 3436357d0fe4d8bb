"""Triton kernels for the fused CAM ops (shipped as ``pycam_fast.kernels``): placeholder until they land."""

from pycam_fast.backends import BackendUnavailable, register_backend


def _missing() -> None:
    raise BackendUnavailable("the Triton kernels are not part of this build yet")


register_backend("triton", _missing, ("cuda",), "Triton kernels (CUDA; CPU under TRITON_INTERPRET=1)")
