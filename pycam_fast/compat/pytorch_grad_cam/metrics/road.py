"""grad-cam 1.5.7's ``pytorch_grad_cam.metrics.road``: ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449).

Same classes, signatures, defaults and numbers as grad-cam. The noisy linear imputation sets up grad-cam's sparse
system (each imputed pixel is the weighted mean of its 8 neighbours) for every image and every percentile of a call
at once, with torch ops, and solves it in float64 on the CPU: one banded Cholesky per image (LAPACK through SciPy;
row-major unknowns make the band at most the image width) up to :data:`BANDED_MAX_BANDWIDTH`, else SuperLU on one
block-diagonal system (the solver grad-cam calls per image); the imputed values agree with grad-cam's to float32
rounding. The noise is drawn from torch's global CPU generator with grad-cam's shapes and in grad-cam's order
(percentile by percentile, sample by sample), so a seeded call reproduces grad-cam's noisy results. The forwards are
batched as described in :mod:`.perturbation_confidence`.

As in grad-cam, :class:`NoisyLinearImputer` always uses :data:`neighbors_weights` (its ``weighting`` argument is
stored but not used), masks are read as binary (``== 0``: imputed, ``> 0.5``: known), and ``"auto"`` percentiles
(Otsu) keep the pixels above the threshold.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.linalg.lapack import dpbsv
from scipy.sparse import coo_matrix, csc_matrix, lil_matrix
from scipy.sparse.linalg import splu, spsolve
from torch import Tensor, nn
from torch.nn import functional as F

from .perturbation_confidence import (
    _PERCENTILES,
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
    averaged_scores,
)

__all__ = [
    "NoisyLinearImputer",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "neighbors_weights",
]

#: ``((row offset, column offset), weight)`` of the 8 neighbours in the imputation equation of a pixel
neighbors_weights = [
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
]

Weights = Sequence[tuple[tuple[int, int], float]]


def _shift(grid: Tensor, offset: tuple[int, int], fill: float) -> Tensor:
    """``out[..., y, x] = grid[..., y + dy, x + dx]`` (``fill`` outside), for a ``(..., H, W)`` grid."""
    dy, dx = offset
    h, w = grid.shape[-2:]
    padded = F.pad(grid, (1, 1, 1, 1), value=fill) if grid.dtype.is_floating_point else _pad_int(grid, fill)
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _pad_int(grid: Tensor, fill: float) -> Tensor:
    out = grid.new_full((*grid.shape[:-2], grid.shape[-2] + 2, grid.shape[-1] + 2), fill)
    out[..., 1:-1, 1:-1] = grid
    return out


def _diagonal(height: int, width: int, weights: Weights, device: torch.device) -> Tensor:
    """``(H, W)`` float64 sum of each pixel's in-image neighbour weights (``1 - `` the weights of those outside)."""
    inside = torch.ones((height, width), dtype=torch.bool, device=device)
    diagonal = torch.ones((height, width), dtype=torch.float64, device=device)
    for offset, weight in weights:
        diagonal = torch.where(_shift(inside, offset, False), diagonal, diagonal - weight)
    return diagonal


def _right_hand_side(images: Tensor, known: Tensor, weights: Weights) -> Tensor:
    """``(C, S, H, W)`` float64 ``-sum_{known q} w_q I_q`` of every pixel's neighbours, in grad-cam's rounding.

    grad-cam subtracts the float32 products ``w * I`` from a float64 vector, neighbour by neighbour; the products of
    each distinct weight are formed once here, padded, and subtracted through shifted windows in the same order.
    """
    height, width = known.shape[-2:]
    channels_first = images.transpose(0, 1)
    products: dict[float, Tensor] = {}
    rhs = torch.zeros((images.shape[1], *known.shape), dtype=torch.float64, device=images.device)
    for (dy, dx), weight in weights:
        if weight not in products:
            products[weight] = F.pad(torch.where(known, channels_first * weight, 0.0).double(), (1, 1, 1, 1))
        rhs -= products[weight][..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return rhs


def _assemble(images: Tensor, masks: Tensor, weights: Weights) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """grad-cam's imputation systems of ``S`` images as one block-diagonal sparse system, in float64.

    The unknowns are the pixels with ``mask == 0``, numbered image by image in row-major order. The equation of
    unknown ``p``: ``-(sum of in-image neighbour weights) x_p + sum_{unknown q} w_q x_q = -sum_{known q} w_q I_q``.

    Args:
        images: ``(S, C, H, W)`` images.
        masks: ``(S, H, W)`` masks.
        weights: ``((dy, dx), w)`` neighbour weights.

    Returns:
        ``(E,)`` row and column indices and values of the matrix entries, the ``(n, C)`` right-hand side and the
        ``(S, H, W)`` boolean map of the unknowns.

    """
    unknown = masks == 0
    ids = (torch.cumsum(unknown.flatten(), 0) - 1).view(unknown.shape)
    rows, cols, vals = [], [], []
    for offset, weight in weights:
        links = unknown & _shift(unknown, offset, False)
        rows.append(ids[links])
        cols.append(_shift(ids, offset, 0)[links])
        vals.append(torch.full(rows[-1].shape, weight, dtype=torch.float64, device=masks.device))
    rows.append(ids[unknown])
    cols.append(rows[-1])
    diagonal = _diagonal(*unknown.shape[-2:], weights, masks.device)
    vals.append(-diagonal.expand_as(unknown)[unknown])
    rhs = _right_hand_side(images, masks > 0.5, weights)
    return torch.cat(rows), torch.cat(cols), torch.cat(vals), rhs[:, unknown].t(), unknown


#: up to this bandwidth (row-major unknowns: at most the image width + 1) the per-image banded Cholesky beats SuperLU
#: on these systems: measured 2.4x-3.3x at 64 px, 2.8x-3.0x at 128, 1.6x-3.0x at 192 and 1.2x-1.8x at 224 (16 images,
#: 20% / 80% imputed, one thread; assembly included)
BANDED_MAX_BANDWIDTH = 225


def _solve(rows: Tensor, cols: Tensor, vals: Tensor, rhs: Tensor, definite: bool) -> np.ndarray:
    """``(n, C)`` float64 solution of the sparse system, with SuperLU on the CPU (as grad-cam).

    A ``definite`` system (every image has a known pixel: the negated matrix is symmetric positive definite) is
    factorised with a symmetric ordering and diagonal pivots; any other goes through grad-cam's ``spsolve`` call.
    """
    n = rhs.shape[0]
    if n == 0:
        return np.zeros((0, rhs.shape[1]))
    matrix = csc_matrix((vals.cpu().numpy(), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n))
    if not definite:
        return np.asarray(spsolve(matrix, rhs.cpu().numpy())).reshape(n, -1)
    factor = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return factor.solve(rhs.cpu().numpy())


def _banded_solution(images: Tensor, masks: Tensor) -> np.ndarray | None:
    """``(n, C)`` float64 solution of the images' systems (each with a known pixel), one banded Cholesky per image.

    The negated matrix of an image is symmetric positive definite; with row-major unknowns only the neighbours
    after a pixel (right, and the row below) lie above the diagonal, at most the image width + 1 away. Each image
    gets its own bandwidth (the largest id distance of its links): a sparse mask has a narrow band.
    ``None``: a bandwidth above :data:`BANDED_MAX_BANDWIDTH`, or a block that is not numerically positive
    definite (SuperLU then solves the systems).
    """
    images, masks = images.cpu(), masks.cpu()
    unknown = masks == 0
    ids = (torch.cumsum(unknown.flatten(1), 1) - 1).view(unknown.shape)  # per image
    later = [(offset, weight) for offset, weight in neighbors_weights if offset > (0, 0)]
    links = torch.stack([unknown & _shift(unknown, offset, False) for offset, _ in later], 1)  # (S, L, H, W)
    distance = torch.where(links, torch.stack([_shift(ids, o, 0) for o, _ in later], 1) - ids[:, None], 0)
    bandwidths = distance.flatten(1).amax(1).tolist() if links.numel() else [0] * len(unknown)
    if max(bandwidths, default=0) > BANDED_MAX_BANDWIDTH:
        return None
    diagonal = _diagonal(*unknown.shape[-2:], neighbors_weights, unknown.device)
    rhs = _right_hand_side(images, masks > 0.5, neighbors_weights)
    couplings = torch.tensor([-weight for _, weight in later], dtype=torch.float64).view(-1, 1, 1)
    solutions = []
    for i, bandwidth in enumerate(bandwidths):  # per image: small tensors (one batch-wide pass measured slower)
        inside, linked = unknown[i], links[i]
        # built transposed, so that LAPACK gets a column-major (Fortran) band without a copy
        band = torch.zeros((int(inside.sum()), bandwidth + 1), dtype=torch.float64)
        band[:, bandwidth] = diagonal[inside]
        band[(ids[i] + distance[i])[linked], bandwidth - distance[i][linked]] = couplings.expand_as(linked)[linked]
        solution = _cholesky_solve(band.numpy().T, rhs[:, i][:, inside].numpy().T)
        if solution is None:
            return None
        solutions.append(-solution)
    return np.concatenate(solutions) if solutions else np.zeros((0, images.shape[1]))


def _cholesky_solve(band: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """``x`` of ``M x = rhs`` for the SPD ``M`` in LAPACK's upper band storage (``None``: not positive definite)."""
    if band.shape[1] == 0:
        return np.zeros(rhs.shape)
    _, solution, info = dpbsv(band, rhs, lower=0, overwrite_ab=1)
    return solution if info == 0 else None


@functools.lru_cache(maxsize=8)
def _blank_solution(height: int, width: int, channels: int) -> np.ndarray:
    """grad-cam's solution for an image without any known pixel (singular; zero right-hand side), computed once."""
    *entries, rhs, _ = _assemble(
        torch.zeros((1, channels, height, width)), torch.zeros((1, height, width)), neighbors_weights
    )
    return _solve(*entries, rhs, definite=False)


def _group_solution(images: Tensor, masks: Tensor, kind: str) -> np.ndarray:
    """The ``(n, C)`` solution of the systems of a group of images: ``definite``, ``blank`` or one ``single``."""
    if kind == "blank":
        return np.tile(_blank_solution(masks.shape[1], masks.shape[2], images.shape[1]), (masks.shape[0], 1))
    if kind == "definite":
        solution = _banded_solution(images, masks)
        if solution is not None:
            return solution
    *entries, rhs, _ = _assemble(images, masks, neighbors_weights)
    return _solve(*entries, rhs, definite=kind == "definite")


def _solutions(images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """The ``(n, C)`` float32 imputed values of all images and the ``(S, H, W)`` map of the imputed pixels.

    The images with a known pixel are solved together (:func:`_banded_solution`, else one block-diagonal SuperLU
    system). An image without any (a singular system) is solved alone with grad-cam's call, so that it cannot spoil
    the others; all-zero masks give the same system for every image of a size, solved once.
    """
    unknown = masks == 0
    known = (masks > 0.5).flatten(1).any(1).cpu()
    blank = unknown.flatten(1).all(1).cpu()
    values = torch.empty((int(unknown.sum()), images.shape[1]), dtype=torch.float32)
    system = torch.repeat_interleave(torch.arange(masks.shape[0]), unknown.flatten(1).sum(1).cpu())
    groups = [(known, "definite"), (blank, "blank")]
    for i in (~known & ~blank).nonzero().flatten().tolist():
        groups.append((torch.arange(masks.shape[0]) == i, "single"))
    for selected, kind in groups:
        if bool(selected.any()):
            where = selected.to(masks.device)
            solution = _group_solution(images[where], masks[where], kind)
            values[selected[system]] = torch.tensor(solution, dtype=torch.float)
    return values, unknown


def _noise(counts: list[int], channels: int, noises: Sequence[float]) -> Tensor:
    """``(n, C)`` noise: per image, ``noise * randn`` drawn as grad-cam draws it.

    grad-cam draws ``randn_like`` of its transposed ``(n, C)`` solution from torch's global CPU generator; SuperLU
    returns that solution in column-major order, so the draws fill a contiguous ``(C, n)`` tensor.
    """
    draws = [float(scale) * torch.randn(channels, count).t() for count, scale in zip(counts, noises, strict=True)]
    return torch.cat(draws) if draws else torch.empty((0, channels))


def impute(images: Tensor, masks: Tensor, noises: Sequence[float]) -> Tensor:
    """Noisy linear imputation of ``S`` images at once.

    Args:
        images: ``(S, C, H, W)`` images (any device).
        masks: ``(S, H, W)`` masks (``0``: impute, ``> 0.5``: known).
        noises: ``S`` noise magnitudes.

    Returns:
        ``(S, C, H, W)`` images with the masked pixels imputed (plus noise), in the images' dtype and device.

    """
    if images.ndim != 4 or masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"imputation needs (S, C, H, W) images and (S, H, W) masks, got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}"
        )
    masks = masks.to(images.device)
    values, unknown = _solutions(images, masks)
    counts = unknown.flatten(1).sum(1).tolist()
    values = values + _noise(counts, images.shape[1], noises)
    out = images.clone()
    out.permute(0, 2, 3, 1)[unknown] = values.to(device=images.device, dtype=images.dtype)
    return out


class NoisyLinearImputer:
    """Noisy linear imputation: each imputed pixel is the weighted mean of its neighbours, plus Gaussian noise.

    Args:
        noise: the standard deviation of the noise (absolute; 0: none).
        weighting: stored only: as in grad-cam, :data:`neighbors_weights` are used.

    """

    def __init__(self, noise: float = 0.01, weighting: list[tuple[tuple[int, int], float]] = neighbors_weights) -> None:
        self.noise = noise
        self.weighting = neighbors_weights

    @staticmethod
    def add_offset_to_indices(
        indices: np.ndarray, offset: tuple[int, int], mask_shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices moved by ``offset`` in a ``mask_shape`` grid: ``(inside-the-grid flags, moved indices)``."""
        row, col = np.divmod(indices, mask_shape[1])
        row, col = row + offset[0], col + offset[1]
        inside = (row >= 0) & (col >= 0) & (row < mask_shape[0]) & (col < mask_shape[1])
        return inside, indices + offset[0] * mask_shape[1] + offset[1]

    @staticmethod
    def setup_sparse_system(mask: np.ndarray, img: np.ndarray, neighbors_weights: Weights) -> tuple[Any, np.ndarray]:
        """grad-cam's system for one ``(H, W)`` mask and ``(C, H, W)`` image: ``(A (n, n) lil_matrix, b (n, C))``."""
        rows, cols, vals, rhs, _ = _assemble(
            torch.from_numpy(np.asarray(img))[None], torch.from_numpy(np.asarray(mask))[None], neighbors_weights
        )
        n = rhs.shape[0]
        matrix = coo_matrix((vals.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
        return lil_matrix(matrix), rhs.numpy()

    def __call__(self, img: Tensor, mask: Tensor) -> Tensor:
        """``(C, H, W)`` image, ``(H, W)`` mask (0: impute) -> the imputed ``(C, H, W)`` image."""
        return impute(img[None], mask[None], [self.noise])[0]


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """ROAD, most relevant first: the confidence change after imputing the pixels above the ``percentile``."""

    def __init__(self, percentile: float | str = 80) -> None:
        super().__init__(RemoveMostRelevantFirst(percentile, NoisyLinearImputer()))


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """ROAD, least relevant first: the confidence change after imputing the pixels below ``100 - percentile``."""

    def __init__(self, percentile: float | str = 20) -> None:
        super().__init__(RemoveLeastRelevantFirst(percentile, NoisyLinearImputer()))


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADMostRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: list[float] = _PERCENTILES) -> None:
        super().__init__(ROADMostRelevantFirst, percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """:class:`ROADLeastRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: list[float] = _PERCENTILES) -> None:
        super().__init__(ROADLeastRelevantFirst, percentiles)


class ROADCombined:
    """``(LeRF average - MoRF average) / 2`` over ``percentiles``: both in one batched imputation and forward."""

    def __init__(self, percentiles: list[float] = _PERCENTILES) -> None:
        self.percentiles = percentiles
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles)

    def __call__(
        self, input_tensor: Tensor, cams: np.ndarray, targets: list[Callable[[Any], Tensor]], model: nn.Module
    ) -> np.ndarray:
        """``(N,)`` float32 ROAD combined scores (the LeRF perturbations are drawn first, as in grad-cam)."""
        lerf, morf = averaged_scores(self, [self.lerf_averager, self.morf_averager], input_tensor, cams, targets, model)
        return (lerf - morf) / 2
