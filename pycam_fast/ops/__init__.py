"""The backend ops: one typed function per op, routed to the fastest backend for the tensors' device.

Each function below is the op's declaration (formula, shapes, dtypes); its schema is in :mod:`.schemas`, its
executable spec in :mod:`.reference` (the ``torch`` backend and test oracle), and the compiled implementations in
:mod:`.compiled` (``cpp``/``cuda``: ``csrc/``) and :mod:`.triton` (``kernels/``). :mod:`.dispatch` picks the backend
(``backend="auto"``: the measured table or the static preference; an unavailable explicit backend raises
``ValueError``) and hands inputs a kernel does not take to the reference, logging why once. The functions promote
mixed input dtypes first, so every backend sees one dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import compiled as compiled
from . import triton as triton
from .dispatch import (
    AUTO_PREFERENCE,
    BackendUnavailable,
    backends,
    register_backend,
    resolve,
    run,
    validate_backend_name,
)
from .reference import DEFAULT_EPS

__all__ = [
    "AUTO_PREFERENCE",
    "DEFAULT_EPS",
    "BackendUnavailable",
    "backends",
    "cam_step",
    "gradcam_weights",
    "gradcampp_weights",
    "gradcampp_weights_torchcam",
    "masked_inputs",
    "nmf",
    "overlay",
    "register_backend",
    "resolve",
    "validate_backend_name",
    "xgradcam_weights",
]


def _promoted(*tensors: Tensor) -> list[Tensor]:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return [t.to(dtype) for t in tensors]


def cam_step(
    weights: Tensor,
    activations: Tensor,
    *,
    output_size: Sequence[int] | None = None,
    relu: bool = True,
    normalize: bool = True,
    eps: float = DEFAULT_EPS,
    backend: str = "auto",
) -> Tensor:
    """The CAM step every method ends with: ``nansum_c(w * A)`` -> resize -> ReLU -> per-sample min-max.

    The channel sum skips NaN products; the resize is ATen's ``align_corners=False`` (bi/tri)linear interpolation
    (``F.interpolate``'s values), applied before ReLU and normalisation; normalisation is
    ``(x - min) / (max(x - min) + eps)`` per sample, and a map that is constant at feature resolution becomes exactly
    0 (the resize of a constant can move by an ulp, which ``1 / eps`` would blow up).

    Args:
        weights: ``(N, C)``, ``(1, C)`` or element-wise ``(N, C, *S)`` weights.
        activations: ``(N, C, *S)`` with 1-3 spatial dims.
        output_size: optional ``S_out``; default: the feature resolution ``S``.
        relu: clamp negative values (every method but base CAM).
        normalize: per-sample min-max normalisation.
        eps: added to the range.
        backend: ``"auto"`` or a backend name (see :func:`backends`).

    Returns:
        ``(N, *S_out)`` contiguous maps in the promoted dtype (fp16/bf16 accumulate in fp32).

    """
    weights, activations = _promoted(weights, activations)
    size = None if output_size is None else [int(s) for s in output_size]
    return run("cam_step", backend, (weights, activations, bool(relu), size, bool(normalize), float(eps)))


def gradcam_weights(grads: Tensor, *, backend: str = "auto") -> Tensor:
    """Grad-CAM weights ``w = mean_S(g)``: ``(N, C, *S) -> (N, C)``."""
    return run("gradcam_weights", backend, (grads,))


def xgradcam_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS, *, backend: str = "auto") -> Tensor:
    """XGrad-CAM weights ``w = sum_S(g * A) / (sum_S(A) + eps)``: ``(N, C, *S) x2 -> (N, C)``."""
    return run("xgradcam_weights", backend, (*_promoted(grads, activations), float(eps)))


def gradcampp_weights(grads: Tensor, activations: Tensor, eps: float = DEFAULT_EPS, *, backend: str = "auto") -> Tensor:
    """Grad-CAM++ weights: ``w = sum_S(alpha * relu(g))``, ``(N, C, *S) x2 -> (N, C)``.

    ``alpha = g^2 / (2 g^2 + sum_S(A) g^3 + eps)`` where ``g^2 > 0``, else 0 (the paper's alpha, one pass).
    """
    return run("gradcampp_weights", backend, (*_promoted(grads, activations), float(eps)))


def gradcampp_weights_torchcam(grads: Tensor, *, backend: str = "auto") -> Tensor:
    """What TorchCAM 0.5.0's GradCAMpp computes: ``w = sum_S(g^2 * relu(g))`` (its alpha is lost): ``-> (N, C)``."""
    return run("gradcampp_weights_torchcam", backend, (grads,))


def masked_inputs(
    activations: Tensor,
    inputs: Tensor,
    start: int,
    stop: int,
    *,
    scale: float = 1.0,
    noise: Tensor | None = None,
    eps: float = DEFAULT_EPS,
    channels_last: bool = False,
    out_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> Tensor:
    """Score-CAM family masked inputs for the flattened (sample, channel) pairs ``start <= j < stop``.

    For ``j = n * C + c``: ``out[j - start] = scale * (U(minmax(A[n, c])) + noise[j - start]) * inputs[n]``, where
    ``minmax`` normalises one channel at feature resolution (``(a - min) / (max - min + eps)``) and ``U`` resizes it
    to the input size (``align_corners=False``). The mask broadcasts over the input channels.

    Args:
        activations: ``(N, C, *S)``.
        inputs: ``(N, Cin, *S_in)`` or ``(1, Cin, *S_in)`` (shared by every sample).
        start: first flattened pair.
        stop: one past the last flattened pair (``<= N * C``).
        scale: multiplier of the masked input (IS-CAM's integration coefficient).
        noise: optional ``(stop - start, *S_in)`` additive mask noise (SS-CAM).
        eps: added to each channel's range.
        channels_last: return a channels-last (2-D) / channels-last-3d (3-D) tensor.
        out_dtype: dtype of the result (default: the inputs').
        backend: ``"auto"`` or a backend name.

    Returns:
        ``(stop - start, Cin, *S_in)`` masked inputs.

    """
    out_dtype = out_dtype or inputs.dtype
    activations, inputs = _promoted(activations, inputs)
    noise = None if noise is None else noise.to(activations.dtype)
    args = (activations, inputs, int(start), int(stop), noise, float(scale), out_dtype, bool(channels_last), float(eps))
    return run("masked_inputs", backend, args)


def overlay(images: Tensor, cams: Tensor, table: Tensor, *, backend: str = "auto") -> Tensor:
    """Blend colour-mapped CAMs over images through a blend table, in one pass (uint8 written once).

    Per pixel and channel ``c``: ``v`` is the 8-bit pixel (uint8 as is; float: ``trunc(255 * clamp(x, 0, 1) + 0.5)``
    in fp32, fp64 for fp64 images, NaN -> 0), ``k = trunc(up(255 * clamp(cam, 0, 1) + 0.5))`` the LUT index (map in
    fp32, NaN -> 0; ``up``: the bilinear resize of :func:`cam_step` to ``(H, W)`` in fp32), and
    ``out = table[c, 256 * k + v]``. Every backend equals the reference bit for bit.

    Args:
        images: ``(N, 3, H, W)`` uint8, or float in ``[0, 1]``; any strides.
        cams: ``(N, h, w)`` float maps in ``[0, 1]``.
        table: ``(3, 65536)`` uint8 blend table on the images' device (``pycam_fast.utils`` builds it).
        backend: ``"auto"`` or a backend name.

    Returns:
        ``(N, 3, H, W)`` contiguous uint8 overlays.

    """
    return run("overlay", backend, (images, cams, table))


def nmf(
    v: Tensor, w: Tensor, h: Tensor, *, max_iter: int = 200, tol: float = 1e-4, backend: str = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """Non-negative matrix factorisation ``v ~ w @ h`` (Frobenius loss) by cyclic coordinate descent from ``(w, h)``.

    Per iteration, every component row of ``w^T`` and then of ``h`` gets the exact non-negative least-squares update
    given the others (HALS): ``rows[t] = max(rows[t] - (gram[t] @ rows - prod[t]) / gram[t, t], 0)``, with
    ``gram = h h^T, prod = h v^T`` for ``w`` and ``gram = w^T w, prod = w^T v`` for ``h``. A matrix stops after the
    iteration whose summed ``|projected gradient|`` is at most ``tol`` times the first iteration's, or after
    ``max_iter``: scikit-learn's ``NMF(solver="cd")`` algorithm, update order and stopping rule, so from its start
    the factors agree with scikit-learn's to float rounding.

    Args:
        v: ``(B, m, n)`` non-negative matrices (float32/float64; fp16/bf16 are solved in float32).
        w: ``(B, m, k)`` non-negative start (not modified).
        h: ``(B, k, n)`` non-negative start (not modified).
        max_iter: iteration limit (>= 1).
        tol: relative violation that stops a matrix.
        backend: ``"auto"`` or a backend name (``cpp`` on CPU; ``cuda`` solves host copies with the CPU kernel
            and returns the factors on the device; other devices run the reference).

    Returns:
        ``w`` ``(B, m, k)``, ``h`` ``(B, k, n)`` in the solved dtype and the iterations run per matrix, ``(B,)`` int64.

    """
    v, w, h = _promoted(v.float() if v.dtype in (torch.float16, torch.bfloat16) else v, w, h)
    return run("nmf", backend, (v, w, h, int(max_iter), float(tol)))  # type: ignore[return-value]
