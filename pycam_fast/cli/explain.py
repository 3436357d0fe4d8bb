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

from ..engine.hooked import HookedExplainer, hooked_method
from .common import (
    CliError,
    add_command,
    add_progress_option,
    add_seed_option,
    check_method,
    choices_text,
    method_choices,
    print_error,
    progress_wanted,
    save_png,
    versions,
    write_json,
)

__all__ = ["IMAGE_SUFFIXES", "LoadedModel", "add_parser", "collect_images", "load_model", "run"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_MODEL_HELP = (
    "'demo' (the shipped demo CNN, 64 px), 'torchvision:NAME' (random weights drawn with --seed: nothing is ever "
    "downloaded), "
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


#: ``pycam-fast explain``'s line in ``pycam-fast --help`` and paragraph in its own ``--help``
_HELP = "explain image files: overlay PNG and raw map (.npy) per image, plus manifest.json"
_DESCRIPTION = """
Compute the CAM of every image (PNG/JPEG files or folders of them) for the predicted class (or --class), and write
<stem>.png (overlay, at the original image's size), <stem>.npy (map in [0, 1] at the model's input size) and
manifest.json in --out. Failed inputs are reported on stderr and the exit status is 1; the others are still processed.
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``explain`` sub-command."""
    parser = add_command(subparsers, "explain", run, _HELP, _DESCRIPTION)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    parser.add_argument("--model", default="demo", help=_MODEL_HELP + " (default: %(default)s)")
    parser.add_argument(
        "--method",
        default="GradCAM",
        help=f"CAM method, case-insensitive: {method_choices(hooked=True)} (default: %(default)s)",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=None,
        help="target layer name, from model.named_modules(); repeat it for RefineCAM (two or more layers) or to "
        "name LeGrad's transformer blocks (default: the model's / automatic; LeGrad: every block with a "
        "self_attention)",
    )
    parser.add_argument("--class", dest="class_idx", default=None, help="class index or name (default: predicted)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1'... (default: %(default)s)")
    parser.add_argument("--backend", default="auto", help="CAM ops backend: auto, torch, cpp, cuda, triton")
    parser.add_argument("--out", type=Path, default=Path("pycam_fast_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: 64 demo, else 224)")
    add_seed_option(parser)
    parser.add_argument(
        "--gradient-filter",
        choices=("none", "guided", "deconv"),
        default="none",
        help="GradCAM weights from filtered gradients (Xplique's variants): guided = positive gradients of positive "
        "activations, deconv = positive gradients (default: %(default)s, the paper's Grad-CAM)",
    )
    add_progress_option(
        parser, "progress bars with ETA (images; masked forwards of the Score-CAM family and AblationCAM)"
    )


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


def _read_image(path: Path, size: int) -> tuple[Tensor, Tensor]:
    """The model input, ``(3, size, size)`` float in ``[0, 1]``, and the original ``(3, H, W)`` uint8 image."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    original = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1), original


# -- models ----------------------------------------------------------------------------------------------------------
def _demo_model() -> LoadedModel:
    from ..demo import CLASS_NAMES, DEMO_TARGET_LAYER, IMAGE_SIZE, load_demo_model

    return LoadedModel(load_demo_model(), IMAGE_SIZE, DEMO_TARGET_LAYER, list(CLASS_NAMES))


def _torchvision_model(spec: str, seed: int) -> LoadedModel:
    try:
        from torchvision import models
    except ImportError as exc:
        raise CliError("--model torchvision:... needs torchvision (pip install torchvision)") from exc
    name, _, weights_name = spec.partition(":")
    torch.manual_seed(seed)  # random init: the same model on every run (gradcam and scorecam explain one model)
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


def load_model(spec: str, seed: int = 0) -> LoadedModel:
    """Load ``demo``, ``torchvision:NAME[:WEIGHTS]`` or a pickled ``FILE.pt`` (see ``--model``'s help).

    Args:
        spec: the ``--model`` value.
        seed: seed of the random initialisation of ``torchvision:NAME`` models.

    Raises:
        CliError: an unknown model or weights, weights not cached, or an unreadable file.

    """
    if spec == "demo":
        return _demo_model()
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.removeprefix("torchvision:"), seed)
    return _file_model(Path(spec))


def _check_layer(model: nn.Module, layer: str | None) -> None:
    if layer is None:
        return
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise CliError(f"unknown layer {layer!r} in the model; {hint}valid layers: {choices_text(names)}")


def _target_layer(model: nn.Module, layer: str | None, size: int) -> str:
    """``layer`` if valid, else the automatic choice (printed once, instead of a warning per Explainer)."""
    from ..layers import locate_candidate_layer

    _check_layer(model, layer)
    if layer is not None:
        return layer
    found = locate_candidate_layer(model, (3, size, size))
    if found is None:
        raise CliError("could not locate a target layer automatically; pass --layer NAME (see model.named_modules())")
    print(f"target layer: {found} (located automatically; choose another with --layer)")
    return found


def _num_classes(model: nn.Module, size: int, device: torch.device) -> int | None:
    """The model's number of outputs (one probe forward on zeros), ``None`` if it is not ``(1, K)``."""
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, size, size, device=device))
    return int(out.shape[1]) if isinstance(out, Tensor) and out.ndim == 2 else None


def _class_index(value: str | None, names: list[str] | None, num_classes: int | None = None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        idx = int(value)
        if num_classes is not None and idx >= num_classes:
            known = f"; or a class name: {choices_text(names, 20)}" if names else ""
            raise CliError(f"--class {idx} is out of range: valid indices are 0-{num_classes - 1}{known}")
        return idx
    if names and value in names:
        return names.index(value)
    if names:
        close = difflib.get_close_matches(value, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise CliError(f"unknown --class {value!r}; {hint}valid class names: {choices_text(names, 20)} (or an index)")
    count = f" (0-{num_classes - 1})" if num_classes else ""
    raise CliError(f"--class {value!r}: this model has no class names; pass a class index{count}")


def _runs_on(devices: list[str], device: torch.device) -> bool:
    return "*" in devices or device.type in devices


def _check_backend(name: str, device: torch.device) -> None:
    """Fail once, up front, when ``--backend`` cannot run on ``device`` (instead of once per image)."""
    from ..ops import backends

    if name == "auto":
        return
    table = backends()
    usable = ", ".join(["auto"] + [b for b, e in table.items() if e["available"] and _runs_on(e["devices"], device)])
    entry = table.get(name)
    if entry is None:
        raise CliError(f"unknown --backend {name!r}; choose one of: auto, {', '.join(table)}")
    if not entry["available"]:
        raise CliError(f"--backend {name} is not available: {entry['reason']}; usable on {device}: {usable}")
    if not _runs_on(entry["devices"], device):
        why = " (no GPU visible)" if device.type == "cpu" and not torch.cuda.is_available() else ""
        raise CliError(
            f"--backend {name} runs on {'/'.join(entry['devices'])} tensors only, but the device is {device}{why}; "
            f"usable on {device}: {usable}"
        )


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
_Batch = tuple[list[Path], Tensor, list[Tensor]]


def _batches(files: list[Path], size: int, batch_size: int, record: _Record) -> Iterator[_Batch]:
    """Readable images, ``batch_size`` at a time: paths, ``(B, 3, size, size)`` inputs, original uint8 images.

    Unreadable files are recorded and skipped.
    """
    paths: list[Path] = []
    images: list[Tensor] = []
    originals: list[Tensor] = []
    for path in files:
        try:
            image, original = _read_image(path, size)
        except Exception as exc:
            record.fail(path, f"unreadable image ({type(exc).__name__}: {exc})")
        else:
            images.append(image)
            originals.append(original)
            paths.append(path)
        if len(paths) == batch_size:
            yield paths, torch.stack(images), originals
            paths, images, originals = [], [], []
    if paths:
        yield paths, torch.stack(images), originals


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 1
    while stem in used:
        stem, k = f"{path.stem}_{k}", k + 1
    used.add(stem)
    return stem


def _tqdm_disable(mode: str) -> bool | None:
    """The tqdm ``disable`` for ``--progress``: ``None`` (auto: a terminal only), ``False`` (on), ``True`` (off)."""
    return {"auto": None, "on": False, "off": True}[mode]


class _Job:
    """One ``explain`` run: the model, the explainer and what was written."""

    def __init__(self, args: argparse.Namespace, loaded: LoadedModel, device: torch.device, size: int) -> None:
        from ..engine import Explainer
        from ..methods import get_method

        self.args, self.loaded, self.device = args, loaded, device
        self.method = check_method(args.method, hooked=True)
        _check_backend(args.backend, device)
        num_classes = _num_classes(loaded.model, size, device) if args.class_idx is not None else None
        self.class_idx = _class_index(args.class_idx, loaded.class_names, num_classes)
        layers = args.layer or []
        for layer in layers:
            _check_layer(loaded.model, layer)
        try:
            if hooked_method(self.method) is not None:
                self.explainer = self._hooked(layers, size)
            else:
                if len(layers) > 1:
                    raise CliError(f"{self.method} explains one layer: give --layer once (RefineCAM takes several)")
                self.layer = _target_layer(loaded.model, layers[0] if layers else loaded.default_layer, size)
                # the Score-CAM family and AblationCAM run one forward per channel (chunk): show their bar
                many_forwards = get_method(self.method).kind in {"score", "ablation"}
                progress = many_forwards and progress_wanted(args.progress)
                options = {} if args.gradient_filter == "none" else {"gradient_filter": args.gradient_filter}
                self.explainer = Explainer(
                    loaded.model, self.method, self.layer, backend=args.backend, progress=progress, **options
                )
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        self.used: set[str] = set()

    def _hooked(self, layers: list[str], size: int) -> HookedExplainer:
        """The runner of a hook-based method (LeGrad, RefineCAM, FinerCAM) on the ``--layer`` s given."""
        if self.args.gradient_filter != "none":
            raise CliError(f"--gradient-filter applies to GradCAM, not to {self.method}")
        chosen: list[str] | str | None = layers or None
        if self.method == "FinerCAM":
            chosen = _target_layer(self.loaded.model, layers[0] if layers else self.loaded.default_layer, size)
        explainer = HookedExplainer(self.loaded.model, self.method, chosen, backend=self.args.backend)
        self.layer = explainer.layers[0] if self.method == "FinerCAM" else explainer.layers
        return explainer

    def _normalise(self, images: Tensor) -> Tensor:
        if self.loaded.mean is None:
            return images
        mean = torch.tensor(self.loaded.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.loaded.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def explain(self, paths: list[Path], images: Tensor, originals: list[Tensor], record: _Record) -> None:
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
        for i, path in enumerate(paths):
            # the overlay at the original image's size and aspect (the map is bilinearly upsampled to it)
            image = overlay(originals[i][None].to(self.device), maps[i][None])[0]
            record.items.append(self._write(path, image, maps[i], int(classes[i]), float(probs[i, classes[i]])))

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
            "image_size": [int(image.shape[1]), int(image.shape[2])],
            "class": cls,
            "class_name": names[cls] if names and cls < len(names) else None,
            "score": score,
        }


def run(args: argparse.Namespace) -> int:
    """Explain the images; returns 0, or 1 when some inputs failed."""
    from tqdm.auto import tqdm

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    loaded = load_model(args.model, args.seed)
    device = _device(args.device)
    loaded.model.to(device)
    size = args.size or loaded.size
    job = _Job(args, loaded, device, size)
    record = _Record()
    files = collect_images(args.paths, record)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # noisy methods (SmoothGradCAMpp, SSCAM, ISCAM): the same maps on every run
    disable = _tqdm_disable(args.progress)
    if disable is None and len(files) <= 1:
        disable = True  # one image: nothing to estimate
    with tqdm(total=len(files), unit="img", desc=f"{job.method}", disable=disable) as bar:
        for paths, images, originals in _batches(files, size, args.batch_size, record):
            job.explain(paths, images, originals, record)
            bar.update(len(paths))
    manifest = {
        "model": args.model,
        "method": job.method,
        "layer": job.layer,
        "input_size": size,
        "seed": args.seed,
        "device": str(device),
        "items": record.items,
        "errors": record.errors,
        "versions": versions(),
    }
    write_json(manifest, args.out / "manifest.json")
    layer = ", ".join(job.layer) if isinstance(job.layer, list) else job.layer
    print(
        f"explained {len(record.items)} of {len(files)} image(s) with {job.method} on layer {layer}; "
        f"{len(record.errors)} error(s); wrote {args.out / 'manifest.json'}"
    )
    return 1 if record.errors else 0
