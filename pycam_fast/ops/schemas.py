"""The op schemas: each backend op's name and signature, declared once.

The C++ extension defines the same schemas for ``torch.ops.pycam_fast.*`` (``csrc/ops/ops.cpp``; a test keeps the
two equal), the Triton backend defines them for ``torch.ops.pycam_fast_triton.*``, and every backend implements them
with positional arguments in this order. The formulas and shapes are documented on the public functions of
:mod:`pycam_fast.ops`; the reference implementations (:mod:`pycam_fast.ops.reference`) are the executable spec and
the fake (meta) implementations that let ``torch.compile`` trace the ops.
"""

from __future__ import annotations

__all__ = ["CPU_ONLY_OPS", "OP_NAMES", "SCHEMAS"]

#: ``{op name: schema}``, argument order = the order every backend implementation takes.
SCHEMAS: dict[str, str] = {
    "cam_step": (
        "cam_step(Tensor weights, Tensor activations, bool relu=True, int[]? output_size=None, bool normalize=True, "
        "float eps=1e-08) -> Tensor"
    ),
    "gradcam_weights": "gradcam_weights(Tensor grads) -> Tensor",
    "xgradcam_weights": "xgradcam_weights(Tensor grads, Tensor activations, float eps=1e-08) -> Tensor",
    "gradcampp_weights": "gradcampp_weights(Tensor grads, Tensor activations, float eps=1e-08) -> Tensor",
    "gradcampp_weights_torchcam": "gradcampp_weights_torchcam(Tensor grads) -> Tensor",
    "masked_inputs": (
        "masked_inputs(Tensor activations, Tensor inputs, int start, int stop, Tensor? noise=None, float scale=1., "
        "ScalarType? out_dtype=None, bool channels_last=False, float eps=1e-08) -> Tensor"
    ),
    "overlay": "overlay(Tensor images, Tensor cams, Tensor table) -> Tensor",
    "nmf": "nmf(Tensor v, Tensor w, Tensor h, int max_iter=200, float tol=0.0001) -> (Tensor, Tensor, Tensor)",
}

OP_NAMES = tuple(SCHEMAS)

#: ops the extension has only a CPU kernel for: NMF's coordinate descent is a sequential loop of small BLAS calls,
#: which the ``cuda`` backend runs on host copies (``compiled._nmf_on_host``)
CPU_ONLY_OPS = frozenset({"nmf"})
