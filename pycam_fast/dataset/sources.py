"""Inputs of a dataset run: an image folder, a file list, a list of paths or any map-style torch ``Dataset``.

Every source is turned into a :class:`SafeItems` dataset whose items never raise: ``(index, input or None, error or
None)``, so an unreadable image becomes an index record with its error instead of stopping the run (also inside
DataLoader worker processes). :func:`collate` batches those items, keeping the failed samples' indices and errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageFiles", "SafeItems", "as_dataset", "collate", "list_images", "sources_digest"]

#: image file suffixes found in folders (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: suffixes of a file list (one path per line, relative to the list's folder unless absolute)
LIST_SUFFIXES = (".txt", ".lst", ".csv")


def list_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files of a folder (recursive, sorted), a file list (``.txt``/``.lst``/``.csv``, first column) or paths.

    Args:
        source: a folder, a file list, one image file, or a sequence of image paths (kept in the given order).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: a folder without images.

    """
    if not isinstance(source, (str, Path)):
        return [Path(p) for p in source]
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.suffix.lower() in LIST_SUFFIXES:
        lines = [line.split(",")[0].strip() for line in path.read_text().splitlines()]
        return [p if p.is_absolute() else path.parent / p for p in (Path(line) for line in lines if line)]
    return [path]


def sources_digest(sources: Sequence[str]) -> str:
    """SHA-1 of the sources' names in order (a resumed run checks that it walks the same samples)."""
    digest = hashlib.sha1()
    for name in sources:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


class ImageFiles(Dataset):
    """Image files decoded to ``(3, H, W)`` float inputs: RGB, bilinear resize, ``[0, 1]``, optional normalisation.

    Args:
        paths: the image files; the sample id of ``paths[i]`` is ``i``.
        size: the input size, one side or ``(H, W)``.
        mean: per-channel mean subtracted after scaling to ``[0, 1]`` (``None``: none).
        std: per-channel std divided by (with ``mean``).

    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int | tuple[int, int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> str:
        """The file of sample ``index``."""
        return str(self.paths[index])

    def __getitem__(self, index: int) -> Tensor:
        """The ``(3, H, W)`` input of sample ``index`` (raises when the file cannot be decoded)."""
        with Image.open(self.paths[index]) as img:
            rgb = img.convert("RGB").resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if self.mean is not None:
            x = (x - self.mean) / (self.std if self.std is not None else 1.0)
        return x


class SafeItems(Dataset):
    """A dataset whose items are ``(index, input, None)`` or ``(index, None, error)``: loading never raises.

    The input is the item itself when it is a tensor, the first element of a tuple/list (``(x, label)``), or the
    ``"image"``/``"input"``/``"pixel_values"`` entry of a dict.

    Args:
        dataset: any map-style dataset.

    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from: ``dataset.source(i)``, ``samples[i][0]``, ``imgs[i][0]``, ``paths[i]``."""
        ds = self.dataset
        if hasattr(ds, "source"):
            return str(ds.source(index))
        for attr in ("samples", "imgs"):
            items = getattr(ds, attr, None)
            if isinstance(items, Sequence) and len(items) == len(ds):
                item = items[index]
                return str(item[0] if isinstance(item, (tuple, list)) else item)
        paths = getattr(ds, "paths", None)
        if isinstance(paths, Sequence) and len(paths) == len(ds):
            return str(paths[index])
        return ""

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, str | None]:
        try:
            return index, _input_of(self.dataset[index]), None
        except Exception as exc:
            return index, None, f"{type(exc).__name__}: {exc}"


def _input_of(item: Any) -> Tensor:
    if isinstance(item, dict):
        for key in ("image", "input", "pixel_values"):
            if key in item:
                item = item[key]
                break
    elif isinstance(item, (tuple, list)):
        item = item[0]
    if not isinstance(item, Tensor):
        raise TypeError(f"the dataset item is a {type(item).__name__}, not a tensor (add a ToTensor transform)")
    return item


def collate(items: list[tuple[int, Tensor | None, str | None]]) -> dict[str, Any]:
    """Batch :class:`SafeItems` items.

    Returns:
        ``{"index": (B,) int64, "inputs": (B_ok, *shape) or None, "ok": (B,) bool, "errors": B strings or None}``;
        an input whose shape differs from the batch's first one is an error too.

    """
    indices = [item[0] for item in items]
    errors = [item[2] for item in items]
    inputs: list[Tensor] = []
    shape = None
    for pos, (_, x, _) in enumerate(items):
        if x is None:
            continue
        if shape is None:
            shape = x.shape
        if x.shape != shape:
            errors[pos] = f"ValueError: input shape {tuple(x.shape)} differs from the batch's {tuple(shape)}"
            continue
        inputs.append(x)
    ok = torch.tensor([e is None for e in errors], dtype=torch.bool)
    return {
        "index": torch.tensor(indices, dtype=torch.int64),
        "inputs": torch.stack(inputs) if inputs else None,
        "ok": ok,
        "errors": errors,
    }


def as_dataset(
    source: Any,
    image_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> SafeItems:
    """Any accepted source as :class:`SafeItems`.

    Args:
        source: a map-style ``Dataset``, a folder, a file list, or a sequence of image paths.
        image_size: the input size for image files (required for them).
        mean: normalisation mean for image files.
        std: normalisation std for image files.

    Raises:
        ValueError: image files without ``image_size``.

    """
    if isinstance(source, SafeItems):
        return source
    if isinstance(source, Dataset) or (
        hasattr(source, "__getitem__")
        and hasattr(source, "__len__")
        and not isinstance(source, (str, Path, list, tuple))
    ):
        return SafeItems(source)
    if image_size is None:
        raise ValueError("image files need `image_size` (the model's input side, or (H, W))")
    return SafeItems(ImageFiles(list_images(source), image_size, mean, std))
