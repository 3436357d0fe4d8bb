"""``pycam-fast explain``: CAMs of image files (overlay PNG + raw ``.npy`` map per image, one manifest JSON)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .common import CliError, check_method, print_error, save_png, versions, write_json

__all__ = ["IMAGE_SUFFIXES", "LoadedModel", "add_parser", "collect_images", "load_model", "run"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_MODEL_HELP = (
    "'demo' (the shipped demo CNN, 64 px), 'torchvision:NAME' (random weights: nothing is ever downloaded), "
    "'torchvision:NAME:WEIGHTS' (e.g. resnet18:IMAGENET1K_V1, only if already in the torch hub cache), or FILE.pt: "
    "a full pickled nn.Module (torch.save(model)), loaded with torch.load(weights_only=False), which runs "
    "arbitrary code: only load files you trust. torchvision models get ImageNet normalisation; others get "
    "images in [0, 1]"
)


@dataclass
class LoadedModel:
    """A model ready to explain, and how to feed it.

    Attributes:
        model: the classifier, in eval mode.
        size: default input side (pixels).
        default_layer: the target layer to use without ``--layer`` (``None``: automatic).
        class_names: class names, when known.
        mean: per-channel normalisation mean (``None``: images in ``[0, 1]``).
        std: per-channel normalisation std.

    """

    model: nn.Module
    size: int
    default_layer: str | None = None
    class_names: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass
class _Record:
    """Results of one run: one manifest item per image, one error per failure."""

    items: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def fail(self, path: Path | str, message: str) -> None:
        print_error(f"{path}: {message}")
        self.errors.append({"file": str(path), "error": message})


def add_parser(subparsers: Any) -> None:
    """Register the ``explain`` sub-command."""
    parser = subparsers.add_parser(
        "explain",
        help="explain image files: overlay PNG and raw map (.npy) per image, plus manifest.json",
        description="Compute the CAM of every image (PNG/JPEG files or folders of them) for the predicted class "
        "(or --class), and write <stem>.png (overlay), <stem>.npy (map in [0, 1] at the input size) and "
        "manifest.json in --out. Failed inputs are reported on stderr and the exit status is 1; the others are "
        "still processed.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    parser.add_argument("--model", default="demo", help=_MODEL_HELP + " (default: %(default)s)")
    parser.add_argument("--method", default="GradCAM", help="CAM method, e.g. GradCAM, ScoreCAM (default: %(default)s)")
    parser.add_argument("--layer", default=None, help="target layer name (default: the model's / automatic)")
    parser.add_argument("--class", dest="class_idx", default=None, help="class index or name (default: predicted)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1'... (default: %(default)s)")
    parser.add_argument("--backend", default="auto", help="CAM ops backend: auto, torch, cpp, cuda, triton")
    parser.add_argument("--out", type=Path, default=Path("pycam_fast_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: 64 demo, else 224)")
    parser.set_defaults(run=run)


# -- inputs ----------------------------------------------------------------------------------------------------------
def collect_images(paths: list[Path], record: _Record) -> list[Path]:
    """Image files named by ``paths`` (folders: their PNG/JPEG files, sorted); missing paths are recorded."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                record.fail(path, "no .png/.jpg/.jpeg files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            record.fail(path, "no such file or folder")
    return files


def _read_image(path: Path, size: int) -> Tensor:
    """``(3, size, size)`` float image in ``[0, 1]``."""
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


# -- models ----------------------------------------------------------------------------------------------------------
def _demo_model() -> LoadedModel:
    from ..demo import CLASS_NAMES, DEMO_TARGET_LAYER, IMAGE_SIZE, load_demo_model

    return LoadedModel(load_demo_model(), IMAGE_SIZE, DEMO_TARGET_LAYER, list(CLASS_NAMES))


def _torchvision_model(spec: str) -> LoadedModel:
    try:
        from torchvision import models
    except ImportError as exc:
        raise CliError("--model torchvision:... needs torchvision (pip install torchvision)") from exc
    name, _, weights_name = spec.partition(":")
    try:
        model = models.get_model(name, weights=None)
    except ValueError as exc:
        raise CliError(f"unknown torchvision model {name!r} ({exc})") from exc
    names = None
    if weights_name:
        weights = _cached_weights(models, name, weights_name)
        model.load_state_dict(weights.get_state_dict(progress=False))
        names = list(weights.meta.get("categories") or []) or None
    return LoadedModel(model.eval(), 224, None, names, _IMAGENET_MEAN, _IMAGENET_STD)


def _cached_weights(models: Any, name: str, weights_name: str) -> Any:
    """The torchvision weights enum entry, only when its file is already in the torch hub cache."""
    try:
        weights = models.get_model_weights(name)[weights_name]
    except (KeyError, ValueError) as exc:
        known = ", ".join(models.get_model_weights(name).__members__)
        raise CliError(f"unknown weights {weights_name!r} for {name}; known: {known}") from exc
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise CliError(
            f"weights {name}:{weights_name} are not in the local cache ({cached}); pycam-fast never downloads: "
            f"fetch them once (torchvision.models.{name}(weights='{weights_name}')) or pass a FILE.pt"
        )
    return weights


def _file_model(path: Path) -> LoadedModel:
    if not path.is_file():
        raise CliError(f"--model: {path} is not 'demo', 'torchvision:NAME[:WEIGHTS]' or an existing .pt file")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CliError(f"could not load {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise CliError(f"{path} holds a {type(model).__name__}, not a full nn.Module (save it with torch.save(model))")
    return LoadedModel(model.eval(), 224)


def load_model(spec: str) -> LoadedModel:
    """Load ``demo``, ``torchvision:NAME[:WEIGHTS]`` or a pickled ``FILE.pt`` (see ``--model``'s help).

    Raises:
        CliError: an unknown model or weights, weights not cached, or an unreadable file.

    """
    if spec == "demo":
        return _demo_model()
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.removeprefix("torchvision:"))
    return _file_model(Path(spec))


def _check_layer(model: nn.Module, layer: str | None) -> None:
    if layer is None:
        return
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CliError(f"unknown layer {layer!r} in the model{hint}")


def _class_index(value: str | None, names: list[str] | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    if names and value in names:
        return names.index(value)
    raise CliError(f"--class {value!r} is neither an index nor a known class name")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CliError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"device {name!r} requested but CUDA is not available")
    return device


# -- run -------------------------------------------------------------------------------------------------------------
def _batches(files: list[Path], size: int, batch_size: int, record: _Record) -> Iterator[tuple[list[Path], Tensor]]:
    """Readable images, ``batch_size`` at a time; unreadable files are recorded and skipped."""
    paths: list[Path] = []
    images: list[Tensor] = []
    for path in files:
        try:
            images.append(_read_image(path, size))
            paths.append(path)
        except Exception as exc:
            record.fail(path, f"unreadable image ({type(exc).__name__}: {exc})")
        if len(paths) == batch_size:
            yield paths, torch.stack(images)
            paths, images = [], []
    if paths:
        yield paths, torch.stack(images)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 1
    while stem in used:
        stem, k = f"{path.stem}_{k}", k + 1
    used.add(stem)
    return stem


class _Job:
    """One ``explain`` run: the model, the explainer and what was written."""

    def __init__(self, args: argparse.Namespace, loaded: LoadedModel, device: torch.device) -> None:
        from ..engine import Explainer

        self.args, self.loaded, self.device = args, loaded, device
        self.method = check_method(args.method)
        layer = args.layer or loaded.default_layer
        _check_layer(loaded.model, layer)
        try:
            self.explainer = Explainer(loaded.model, self.method, layer, backend=args.backend)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        self.class_idx = _class_index(args.class_idx, loaded.class_names)
        self.used: set[str] = set()

    def _normalise(self, images: Tensor) -> Tensor:
        if self.loaded.mean is None:
            return images
        mean = torch.tensor(self.loaded.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.loaded.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def explain(self, paths: list[Path], images: Tensor, record: _Record) -> None:
        """Explain one batch and write its files (a failure fails the batch's images only)."""
        from ..utils import overlay

        images = images.to(self.device)
        try:
            maps = self.explainer(self._normalise(images), class_idx=self.class_idx)
        except Exception as exc:
            for path in paths:
                record.fail(path, f"{type(exc).__name__}: {exc}")
            return
        probs = torch.softmax(self.explainer.logits.float(), dim=1)
        classes = probs.argmax(1) if self.class_idx is None else torch.full_like(probs[:, 0], self.class_idx).long()
        overlays = overlay(images, maps)
        for i, path in enumerate(paths):
            record.items.append(self._write(path, overlays[i], maps[i], int(classes[i]), float(probs[i, classes[i]])))

    def _write(self, path: Path, image: Tensor, cam: Tensor, cls: int, score: float) -> dict[str, Any]:
        stem = _unique_stem(path, self.used)
        out = self.args.out
        save_png(image, out / f"{stem}.png")
        np.save(out / f"{stem}.npy", cam.float().cpu().numpy())
        names = self.loaded.class_names
        return {
            "file": str(path),
            "overlay": f"{stem}.png",
            "map": f"{stem}.npy",
            "class": cls,
            "class_name": names[cls] if names and cls < len(names) else None,
            "score": score,
        }


def run(args: argparse.Namespace) -> int:
    """Explain the images; returns 0, or 1 when some inputs failed."""
    from tqdm.auto import tqdm

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    loaded = load_model(args.model)
    device = _device(args.device)
    loaded.model.to(device)
    job = _Job(args, loaded, device)
    record = _Record()
    files = collect_images(args.paths, record)
    size = args.size or loaded.size
    args.out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(files), unit="img", disable=len(files) <= args.batch_size or None) as bar:
        for paths, images in _batches(files, size, args.batch_size, record):
            job.explain(paths, images, record)
            bar.update(len(paths))
    manifest = {
        "model": args.model,
        "method": args.method,
        "layer": job.explainer.target_name,
        "input_size": size,
        "device": str(device),
        "items": record.items,
        "errors": record.errors,
        "versions": versions(),
    }
    write_json(manifest, args.out / "manifest.json")
    print(
        f"explained {len(record.items)} image(s) with {args.method} on {job.explainer.target_name}; "
        f"{len(record.errors)} error(s); wrote {args.out / 'manifest.json'}"
    )
    return 1 if record.errors else 0
