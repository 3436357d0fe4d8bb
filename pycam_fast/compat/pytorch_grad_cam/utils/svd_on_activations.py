"""First-principal-component projections of activations, with pytorch-grad-cam's names, signs and outputs.

Singular vectors are only defined up to sign, and pytorch-grad-cam's maps carry the sign NumPy's LAPACK gives the
centred ``(P, C)`` matrix of each image. That sign is not a continuous function of the matrix: a rounding-level
difference in the centring (a ``torch.mean`` instead of NumPy's pairwise ``mean``) is enough to flip it for some
inputs. :func:`numpy_sign_projection` therefore centres and factorises each image exactly as pytorch-grad-cam does
(NumPy, same dtype, same reduction), which makes the sign (and the map) match bit for bit; it is the one host round
trip of ``eigen_smooth`` and the Eigen methods. :func:`kernel_projection` (kernel PCA) runs in torch on the device.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "get_2d_projection",
    "get_2d_projection_kernel",
    "get_2d_projection_with_sign_correction",
    "kernel_projection",
    "numpy_sign_projection",
]


@functools.cache
def _blas_pools() -> Any:
    """The controller of the loaded thread pools (threadpoolctl), or ``None`` without threadpoolctl.

    Built once: finding the pools scans every loaded library (about 7 ms, more than the SVDs of a batch).
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - optional
        return None
    return ThreadpoolController()


def _single_blas_thread() -> AbstractContextManager[object]:
    """Limit NumPy's BLAS to one thread (its pool fights torch's OpenMP threads on small matrices)."""
    pools = _blas_pools()
    return nullcontext() if pools is None else pools.limit(limits=1, user_api="blas")


def _project_one(activations: np.ndarray, sign_correction: bool) -> np.ndarray:
    """One image's ``(C, *S)`` activations -> ``(*S)`` projection on the first right-singular vector (NumPy's sign)."""
    matrix = activations.reshape(activations.shape[0], -1).T  # (P, C) view, P the contiguous axis
    matrix = matrix - matrix.mean(axis=0)
    # the thin SVD's first right-singular vector carries the same sign as the full one pytorch-grad-cam computes
    vector = np.linalg.svd(matrix, full_matrices=False)[2][0]
    projection = (matrix @ vector).reshape(activations.shape[1:])
    if sign_correction and abs(projection.min()) > abs(projection.max()):
        projection = -projection
    return projection


def _projections(batch: np.ndarray, sign_correction: bool) -> np.ndarray:
    batch = np.array(batch, copy=True)
    batch[np.isnan(batch)] = 0
    with _single_blas_thread():
        return np.float32([_project_one(acts, sign_correction) for acts in batch])


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """``(N, C, *S)`` activations -> ``(N, *S)`` float32 projections on each image's first principal component.

    NaN activations count as 0; each channel is centred over the positions first; the sign is NumPy's SVD's.
    """
    return _projections(np.asarray(activation_batch), sign_correction=False)


def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray:
    """:func:`get_2d_projection`, each map negated when ``|min| > |max|`` (Seg-Eigen-CAM's sign correction)."""
    return _projections(np.asarray(activation_batch), sign_correction=True)


def numpy_sign_projection(features: Tensor, sign_correction: bool = False) -> Tensor:
    """:func:`get_2d_projection` of a tensor: ``(N, C, *S) -> (N, *S)`` on the features' device and dtype.

    The factorisation runs in NumPy on the host, in the features' dtype (float32 for float32 features), because
    pytorch-grad-cam's sign is NumPy's LAPACK's: one batched copy each way.
    """
    host = features.detach().cpu()
    if host.dtype not in (torch.float32, torch.float64):
        host = host.float()
    projection = _projections(host.numpy(), sign_correction)
    return torch.from_numpy(projection).to(features.device, features.dtype)


def kernel_projection(features: Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> Tensor:
    """Kernel-PCA projection of each image's positions on the first kernel principal component, in torch.

    What ``sklearn.decomposition.KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform`` returns for
    the centred ``(P, C)`` matrix of each image, batched: the centred ``(P, P)`` kernel's top eigenvector (sign: its
    largest-magnitude entry positive, scikit-learn's ``svd_flip``) times the square root of its eigenvalue (0 when
    negative). Computed in float64 on the features' device.

    Args:
        features: ``(N, C, *S)``.
        kernel: ``"sigmoid"`` (``tanh(gamma <x, y> + 1)``), ``"rbf"`` (``exp(-gamma |x - y|^2)``), ``"poly"``
            (``(gamma <x, y> + 1)^3``), ``"linear"`` or ``"cosine"``.
        gamma: kernel coefficient (default ``1 / C``).

    Returns:
        ``(N, *S)`` float32 projections.

    Raises:
        ValueError: an unknown kernel.

    """
    matrix = torch.nan_to_num(features.detach().flatten(2), nan=0.0).transpose(1, 2).double()  # (N, P, C)
    matrix = matrix - matrix.mean(dim=1, keepdim=True)
    g = 1.0 / matrix.shape[-1] if gamma is None else float(gamma)
    dots = matrix @ matrix.transpose(1, 2)
    if kernel == "sigmoid":
        gram = torch.tanh(g * dots + 1.0)
    elif kernel == "rbf":
        sq = dots.diagonal(dim1=1, dim2=2)
        gram = torch.exp(-g * (sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * dots).clamp_min(0))
    elif kernel == "poly":
        gram = (g * dots + 1.0) ** 3
    elif kernel == "linear":
        gram = dots
    elif kernel == "cosine":
        norms = matrix.norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
        gram = dots / norms.unsqueeze(2) / norms.unsqueeze(1)
    else:
        raise ValueError(f"`kernel` must be one of sigmoid, rbf, poly, linear, cosine; got {kernel!r}")
    gram = gram - gram.mean(dim=1, keepdim=True) - gram.mean(dim=2, keepdim=True) + gram.mean(dim=(1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(gram)
    value, vector = values[:, -1].clamp_min(0), vectors[..., -1]  # (N,), (N, P)
    peak = vector.gather(1, vector.abs().argmax(dim=1, keepdim=True))
    vector = vector * torch.where(peak < 0, -1.0, 1.0)
    projection = vector * value.sqrt().unsqueeze(1)
    return projection.view(features.shape[0], *features.shape[2:]).float()


def get_2d_projection_kernel(
    activation_batch: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None
) -> np.ndarray:
    """``(N, C, *S)`` activations -> ``(N, *S)`` float32 kernel-PCA projections (see :func:`kernel_projection`)."""
    return kernel_projection(torch.as_tensor(np.asarray(activation_batch)), kernel, gamma).numpy()
