"""Seeded synthetic "shapes" images: one coloured object on a textured background, with its mask and box.

Everything is vectorised over the batch and drawn from one ``torch.Generator`` seeded by the caller, so a
``(n, seed)`` pair always gives the same images on any machine (CPU float32 ops only). Images are ``(3, 64, 64)``
float32 in ``[0, 1]``; masks are ``(64, 64)`` bool; boxes are ``(x_min, y_min, x_max, y_max)`` inclusive pixel
indices of the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "ShapeBatch",
    "generate",
    "make_batch",
    "make_image",
    "masks_to_boxes",
]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "star")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 64

_MIN_RADIUS = 9.0
_MAX_RADIUS = 19.0
_MIN_CONTRAST = 0.55


@dataclass(frozen=True)
class ShapeBatch:
    """A batch of synthetic images with their ground truth.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64 class indices into ``CLASS_NAMES``.
        masks: ``(N, H, W)`` bool, True on the object.
        boxes: ``(N, 4)`` int64 ``(x_min, y_min, x_max, y_max)``, inclusive bounds of each mask.

    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    """``shape`` floats uniform in ``[low, high)``."""
    return low + (high - low) * torch.rand(shape, generator=gen)


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(ys, xs)``, each ``(1, H, W)``."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return ys.unsqueeze(0), xs.unsqueeze(0)


def _regular_polygon(rho: Tensor, phi: Tensor, sides: int, circumradius: float) -> Tensor:
    """Inside test for a regular polygon centred at the origin with a vertex on the +u axis."""
    sector = 2 * math.pi / sides
    local = torch.remainder(phi, sector) - sector / 2
    return rho * torch.cos(local) <= circumradius * math.cos(math.pi / sides)


def _star(rho: Tensor, phi: Tensor, points: int = 5, inner: float = 0.42, outer: float = 1.1) -> Tensor:
    """Inside test for a ``points``-pointed star (boundary radius linear in angle between tip and valley)."""
    sector = 2 * math.pi / points
    t = torch.remainder(phi, sector) / sector
    boundary = inner + (outer - inner) * torch.abs(1 - 2 * t)
    return rho <= boundary


def _shape_masks(u: Tensor, v: Tensor) -> Tensor:
    """Masks of every class in the local frame of each object.

    Args:
        u: ``(N, H, W)`` rotated x coordinate divided by the object radius.
        v: ``(N, H, W)`` rotated y coordinate divided by the object radius.

    Returns:
        ``(NUM_CLASSES, N, H, W)`` bool, in ``CLASS_NAMES`` order.

    """
    rho = torch.sqrt(u * u + v * v)
    phi = torch.atan2(v, u)
    au, av = u.abs(), v.abs()
    arm = 0.32
    return torch.stack(
        [
            rho <= 1.0,
            torch.maximum(au, av) <= 0.8,
            _regular_polygon(rho, phi, sides=3, circumradius=1.15),
            ((au <= arm) & (av <= 1.0)) | ((av <= arm) & (au <= 1.0)),
            (rho <= 1.0) & (rho >= 0.55),
            _star(rho, phi),
        ]
    )


def _object_masks(gen: torch.Generator, labels: Tensor, size: int) -> Tensor:
    """Draw position, scale and rotation and rasterise one object per image.

    Args:
        gen: random generator.
        labels: ``(N,)`` class indices.
        size: image side ``H = W``.

    Returns:
        ``(N, H, W)`` bool masks.

    """
    n = labels.shape[0]
    radius = _uniform(gen, (n,), _MIN_RADIUS, _MAX_RADIUS)
    margin = radius + 1.0
    cx = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
    angle = _uniform(gen, (n,), 0.0, 2 * math.pi)
    ys, xs = _grid(size)
    dx, dy = xs - cx.view(n, 1, 1), ys - cy.view(n, 1, 1)
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    r = radius.view(n, 1, 1)
    u, v = (cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r
    return _shape_masks(u, v)[labels, torch.arange(n)]


def _smooth_noise(gen: torch.Generator, n: int, channels: int, cells: tuple[int, ...], size: int) -> Tensor:
    """``(N, channels, H, W)`` smooth noise in ``[0, 1]``: a mean of octaves of random ``cells x cells`` grids.

    Each octave is bicubic-upsampled to ``H / 4``; their mean is bilinear-upsampled to ``H`` (cheap and smooth).
    """
    mid = torch.zeros((n, channels, size // 4, size // 4))
    for c in cells:
        coarse = torch.rand((n, channels, c, c), generator=gen)
        mid += nnf.interpolate(coarse, size=mid.shape[-2:], mode="bicubic", align_corners=False) / len(cells)
    return nnf.interpolate(mid, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def _two_colour_pattern(gen: torch.Generator, n: int, size: int, profile: Tensor) -> Tensor:
    """Blend two random colours per image with ``profile`` in ``[0, 1]``, ``(N, H, W)`` -> ``(N, 3, H, W)``."""
    c1 = torch.rand((n, 3, 1, 1), generator=gen)
    c2 = torch.rand((n, 3, 1, 1), generator=gen)
    return c1 + (c2 - c1) * profile.unsqueeze(1)


def _backgrounds(gen: torch.Generator, n: int, size: int, clutter: float = 1.0) -> Tensor:
    """Random mixes of smooth noise, stripes and a linear colour gradient.

    ``clutter`` in ``[0, 1]`` blends from a plain gradient (0) to the full mix (1).

    Returns:
        ``(N, 3, H, W)`` float32 in ``[0, 1]``.

    """
    ys, xs = _grid(size)
    direction = _uniform(gen, (n, 1, 1), 0.0, 2 * math.pi)
    along = (xs * torch.cos(direction) + ys * torch.sin(direction)) / size
    freq = _uniform(gen, (n, 1, 1), 1.5, 7.0)
    phase = _uniform(gen, (n, 1, 1), 0.0, 2 * math.pi)
    stripes = _two_colour_pattern(gen, n, size, 0.5 + 0.5 * torch.sin(2 * math.pi * freq * along + phase))
    ramp = (along - along.amin(dim=(1, 2), keepdim=True)) / (
        along.amax(dim=(1, 2), keepdim=True) - along.amin(dim=(1, 2), keepdim=True)
    )
    gradient = _two_colour_pattern(gen, n, size, ramp)
    noise = _smooth_noise(gen, n, 3, (4, 9), size)
    weights = torch.rand((n, 3), generator=gen) ** 3
    weights = (weights / weights.sum(dim=1, keepdim=True)).view(n, 3, 1, 1, 1)
    mix = weights[:, 0] * stripes + weights[:, 1] * gradient + weights[:, 2] * noise
    return gradient + clutter * (mix - gradient)


def _object_colours(gen: torch.Generator, backgrounds: Tensor, masks: Tensor) -> Tensor:
    """Random object colours pushed away from the mean background colour under the object.

    Args:
        gen: random generator.
        backgrounds: ``(N, 3, H, W)``.
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N, 3)`` colours in ``[0, 1]``.

    """
    n = masks.shape[0]
    m = masks.unsqueeze(1).float()
    under = (backgrounds * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp_min(1.0)
    colours = torch.rand((n, 3), generator=gen)
    offset = colours - under
    dist = offset.norm(dim=1, keepdim=True)
    pushed = (under + offset / dist.clamp_min(1e-6) * _MIN_CONTRAST).clamp(0, 1)
    opposite = (under < 0.5).float()
    pushed = torch.where((pushed - under).norm(dim=1, keepdim=True) < _MIN_CONTRAST * 0.8, opposite, pushed)
    return torch.where(dist < _MIN_CONTRAST, pushed, colours)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Inclusive bounding boxes of non-empty masks.

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(N, 4)`` int64 ``(x_min, y_min, x_max, y_max)``; ``(-1, -1, -1, -1)`` for an empty mask.

    """
    n, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    x_idx = torch.arange(w).expand(n, w)
    y_idx = torch.arange(h).expand(n, h)
    big = max(h, w)
    boxes = torch.stack(
        [
            torch.where(cols, x_idx, big).amin(dim=1),
            torch.where(rows, y_idx, big).amin(dim=1),
            torch.where(cols, x_idx, -1).amax(dim=1),
            torch.where(rows, y_idx, -1).amax(dim=1),
        ],
        dim=1,
    )
    return torch.where(masks.flatten(1).any(dim=1, keepdim=True), boxes, torch.full_like(boxes, -1))


def generate(
    n: int, seed: int, labels: Tensor | None = None, size: int = IMAGE_SIZE, clutter: float = 1.0
) -> ShapeBatch:
    """Generate ``n`` images deterministically from ``seed``.

    Args:
        n: number of images.
        seed: seed of the private ``torch.Generator`` (the global RNG is not touched).
        labels: optional ``(n,)`` int64 classes to draw; default: uniform random classes.
        size: image side (default 64).
        clutter: background difficulty in ``[0, 1]``: 0 gives plain colour gradients and no pixel noise, 1 (the
            default, used for every evaluation) the full mix of stripes, noise and gradients. Training ramps it up.

    Returns:
        a :class:`ShapeBatch` with ``(n, 3, size, size)`` images, ``(n,)`` labels, ``(n, size, size)`` masks and
        ``(n, 4)`` boxes.

    """
    gen = torch.Generator().manual_seed(int(seed))
    if labels is None:
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    else:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (n,) or (labels < 0).any() or (labels >= NUM_CLASSES).any():
            raise ValueError(f"labels must be ({n},) ints in [0, {NUM_CLASSES}), got {tuple(labels.shape)}")
    masks = _object_masks(gen, labels, size)
    backgrounds = _backgrounds(gen, n, size, clutter)
    colours = _object_colours(gen, backgrounds, masks).view(n, 3, 1, 1)
    shading = 0.75 + 0.5 * _smooth_noise(gen, n, 1, (3,), size)
    objects = (colours * shading).clamp(0, 1)
    images = torch.where(masks.unsqueeze(1), objects, backgrounds)
    noise_std = clutter * _uniform(gen, (n, 1, 1, 1), 0.0, 0.06)
    images = (images + noise_std * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    return ShapeBatch(images=images.contiguous(), labels=labels, masks=masks, boxes=masks_to_boxes(masks))


def make_batch(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Generate ``n`` images deterministically from ``seed``.

    Returns:
        ``(images, labels, masks)``: ``(n, 3, 64, 64)`` float32 in ``[0, 1]``, ``(n,)`` int64, ``(n, 64, 64)`` bool.

    """
    batch = generate(n, seed)
    return batch.images, batch.labels, batch.masks


def make_image(seed: int, label: int | None = None) -> tuple[Tensor, int, Tensor, tuple[int, int, int, int]]:
    """One image, deterministic for ``seed`` (and ``label`` if given).

    Returns:
        ``(image, label, mask, box)``: ``(3, 64, 64)`` float32, the class index, ``(64, 64)`` bool mask and the
        inclusive ``(x_min, y_min, x_max, y_max)`` box.

    """
    labels = None if label is None else torch.tensor([label])
    batch = generate(1, seed, labels=labels)
    x0, y0, x1, y1 = (int(v) for v in batch.boxes[0])
    return batch.images[0], int(batch.labels[0]), batch.masks[0], (x0, y0, x1, y1)
