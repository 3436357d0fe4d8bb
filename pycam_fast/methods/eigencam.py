"""Eigen-CAM ("Eigen-CAM: Class Activation Map using Principal Components", Muhammad & Yeasin 2020).

Per image, the ``(N, C, *S)`` features become a ``(P, C)`` matrix (``P = prod(S)``, NaN set to 0), centred per
channel; the map is its projection on the first right-singular vector, found as the top eigenvector of the
smaller Gram matrix with one batched float64 ``torch.linalg.eigh`` on the features' device (far cheaper than an SVD
of the wide ``(P, C)`` matrix).

Sign: singular vectors are defined up to sign. With ``sign="max"`` (default) a map is flipped when
``|min| > |max|`` (pytorch-grad-cam's Seg-Eigen-CAM correction), so the salient side is positive whatever the
LAPACK. ``sign="numpy"`` reproduces pytorch-grad-cam's ``get_2d_projection`` exactly (NumPy's LAPACK sign, one
batched CPU copy per layer): the pytorch-grad-cam compatibility layer uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .extractor import CAMExtractor
from .options import check_option
from .spec import CamTerms, LayerInputs, MethodSpec, define_method

__all__ = ["EIGENCAM", "EigenCAM", "define_projection_method", "principal_projection", "projection_terms"]


def _centred_matrix(features: Tensor) -> Tensor:
    """``(N, C, *S) -> (N, P, C)``, NaN -> 0, each channel centred over the ``P`` positions."""
    matrix = torch.nan_to_num(features.flatten(2), nan=0.0).transpose(1, 2)
    return matrix - matrix.mean(dim=1, keepdim=True)


def _numpy_top_right_vector(matrix: Tensor) -> Tensor:
    """``(N, P, C) -> (N, C)``: NumPy's first right-singular vectors, sign included (pytorch-grad-cam's)."""
    # the thin SVD has the same sign as the full one pytorch-grad-cam computes
    with _single_blas_thread():
        vh = np.linalg.svd(matrix.detach().cpu().numpy(), full_matrices=False)[2]
    return torch.from_numpy(np.ascontiguousarray(vh[:, 0])).to(matrix.device, matrix.dtype)


def _single_blas_thread() -> AbstractContextManager[object]:
    """Limit NumPy's BLAS to one thread (its pool fights torch's OpenMP threads on small matrices)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _top_right_vector(matrix: Tensor) -> Tensor:
    """``(N, P, C) -> (N, C)`` first right-singular vectors (sign: the eigensolver's), from the smaller Gram matrix.

    The top eigenvector of ``M M^T`` (``P <= C``) or ``M^T M`` is found by a batched ``eigh`` in float64, so the
    squared condition number costs no accuracy for fp32 features.
    """
    work = matrix.double()
    if work.shape[1] <= work.shape[2]:
        left = torch.linalg.eigh(work @ work.transpose(1, 2)).eigenvectors[..., -1]  # (N, P)
        vector = (work.transpose(1, 2) @ left.unsqueeze(-1)).squeeze(-1)
        vector = vector / vector.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(work.dtype).tiny)
    else:
        vector = torch.linalg.eigh(work.transpose(1, 2) @ work).eigenvectors[..., -1]
    return vector.to(matrix.dtype)


def principal_projection(features: Tensor, sign: str = "max") -> Tensor:
    """Projection of each image's centred ``(P, C)`` feature matrix on its first principal direction.

    Args:
        features: ``(N, C, *S)``.
        sign: ``"max"`` (flip a map when ``|min| > |max|``), ``"numpy"`` (NumPy's SVD and its sign, as
            pytorch-grad-cam) or ``"none"`` (the eigensolver's arbitrary sign).

    Returns:
        ``(N, *S)`` projections, in the features' dtype and device.

    Raises:
        ValueError: an unknown ``sign``.

    """
    sign = check_option("sign", sign)
    matrix = _centred_matrix(features)
    vector = _numpy_top_right_vector(matrix) if sign == "numpy" else _top_right_vector(matrix)
    projection = (matrix @ vector.unsqueeze(-1)).squeeze(-1)
    if sign == "max":
        flip = projection.amin(-1).abs() > projection.amax(-1).abs()
        projection = torch.where(flip.unsqueeze(-1), -projection, projection)
    return projection.view(features.shape[0], *features.shape[2:])


def projection_terms(features: Tensor, sign: str) -> CamTerms:
    """The terms of a map that is the principal projection of ``features``: one unit-weight channel."""
    with torch.no_grad():
        projection = principal_projection(features, sign).unsqueeze(1)
    return CamTerms(projection.new_ones(1, 1), projection)


def define_projection_method(
    name: str, kind: str, features: Callable[[LayerInputs], Tensor], summary: str, **fields: Any
) -> MethodSpec:
    """Define and register an Eigen-CAM-style method: the projection of its features on their first component.

    The terms are :func:`projection_terms` of ``features(layer)``; the method has the option ``sign`` (default
    ``"max"``).

    Args:
        name: the method's class name.
        kind: one of :data:`~.spec.KINDS`.
        features: ``LayerInputs -> (N, C, *S)`` the features to project.
        summary: the formula in one line.
        fields: the other :class:`~.spec.MethodSpec` fields.

    Returns:
        the registered spec.

    """

    def terms(layer: LayerInputs) -> CamTerms:
        return projection_terms(features(layer), layer.options["sign"])

    return define_method(name, kind, terms, summary, options={"sign": "max"}, **fields)


EIGENCAM = define_projection_method(
    "EigenCAM",
    "activation",
    lambda layer: layer.activations,
    "L = ReLU(projection of the centred A on its first principal component)",
    class_agnostic=True,
)


class EigenCAM(CAMExtractor):
    r"""Eigen-CAM: ``L = ReLU(first principal component projection of A)``.

    Gradient-free and class-agnostic (``class_idx`` / ``targets`` are accepted and ignored; no scores are needed).
    Takes ``sign`` (see :func:`principal_projection`) besides :class:`~.extractor.CAMExtractor`'s arguments.
    """

    spec = EIGENCAM
