"""``pycam-fast demo``: CAMs of the shipped demo CNN on generated shapes, with localisation scores."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .common import add_command, check_method, save_png, versions, write_json

__all__ = ["DEFAULT_METHODS", "add_parser", "held_out_accuracy", "run", "shipped_accuracy"]

DEFAULT_METHODS = ("CAM", "GradCAM", "GradCAMpp", "XGradCAM", "LayerCAM", "ScoreCAM")
_SCORE_BATCH = 1024  # masked images per forward for the Score-CAM family (64x64 inputs: cheap)
_CELL_INCHES, _DPI = 0.9, 100


#: ``pycam-fast demo``'s line in ``pycam-fast --help`` and paragraph in its own ``--help``
_HELP = "explain the shipped demo CNN on generated shapes; write overlays, a grid PNG and scores"
_DESCRIPTION = """
Run CAM methods on the offline demo model (synthetic shapes, 64x64) and score how well each map localises the object
(pointing game, energy in mask). The grid's column titles read true -> predicted class. The printed accuracy counts the
demo images, next to the model's accuracy measured on held-out images when it was trained (--accuracy-images N measures
it here).
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` sub-command."""
    parser = add_command(subparsers, "demo", run, _HELP, _DESCRIPTION)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="M", help="methods (default: %(default)s)"
    )
    parser.add_argument("--num-images", type=int, default=8, metavar="N", help="images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default: %(default)s)")
    parser.add_argument(
        "--accuracy-images",
        type=int,
        default=0,
        metavar="N",
        help="also measure the accuracy on N held-out generated images (the shipped test seed; 1000 take a few "
        "seconds; default: %(default)s: quote the accuracy measured at training time)",
    )


def _explain(model: torch.nn.Module, method: str, images: Tensor, labels: Tensor) -> tuple[Tensor, float]:
    """``(N, H, W)`` maps of one method for the true classes, and the seconds it took."""
    from ..demo import DEMO_TARGET_LAYER
    from ..engine import Explainer
    from ..methods import get_method

    batch = {"batch_size": _SCORE_BATCH} if get_method(method).kind in {"score", "ablation"} else {}
    explainer = Explainer(model, method, DEMO_TARGET_LAYER, **batch)
    start = time.perf_counter()
    maps = explainer(images, class_idx=labels.tolist())
    return maps, time.perf_counter() - start


def shipped_accuracy() -> dict[str, Any] | None:
    """The accuracy measured when the shipped weights were trained: ``{"accuracy", "images", "seed"}`` or ``None``."""
    from ..demo import DEMO_WEIGHTS

    try:
        meta = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
        return {"accuracy": float(meta["test_accuracy"]), "images": int(meta["test_size"]), "seed": meta["test_seed"]}
    except (OSError, ValueError, KeyError):
        return None


def held_out_accuracy(model: torch.nn.Module, n: int, seed: int, chunk: int = 250) -> float:
    """Accuracy of ``model`` on ``n`` generated images of ``seed`` (``chunk`` images at a time)."""
    from ..demo import generate

    batch = generate(n, seed)
    with torch.no_grad():
        preds = torch.cat([model(part).argmax(1) for part in batch.images.split(chunk)])
    return (preds == batch.labels).float().mean().item()


def _grid(images: Tensor, overlays: dict[str, Tensor], titles: list[str], correct: list[bool], path: Path) -> None:
    """Save a (1 + methods) x images grid: the inputs on top, one row of ``(N, 3, H, W)`` overlays per method.

    Column titles read ``true→predicted`` (red when they differ), as the figure's heading says.
    """
    from matplotlib.figure import Figure

    rows = {"input": (images * 255).round().to(torch.uint8), **overlays}
    cols = images.shape[0]
    height = _CELL_INCHES * len(rows) + 0.55
    fig = Figure(figsize=(_CELL_INCHES * cols + 0.8, height), dpi=_DPI)
    wrong = sum(not ok for ok in correct)
    fig.suptitle(
        f"column titles: true class → predicted class ({len(correct) - wrong}/{len(correct)} correct"
        f"{', misclassified in red' if wrong else ''}); rows: CAMs of the true class",
        fontsize=7,
        y=1 - 0.06 / height,
        va="top",
    )
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, batch) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(batch[c].permute(1, 2, 0).cpu().numpy(), interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=6, color="black" if correct[c] else "red")
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.995, top=1 - 0.42 / height, bottom=0.005, wspace=0.04, hspace=0.04)
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as a 256-colour PNG (a few hundred KB instead of a megabyte of noisy textures)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def _accuracy_note(shipped: dict[str, Any] | None, held_out: dict[str, Any] | None) -> str:
    """``; 99.55% on 2000 held-out images ...``: what the demo's small count should be read against."""
    notes = []
    if held_out:
        notes.append(f"{100 * held_out['accuracy']:.2f}% on {held_out['images']} held-out images measured now")
    if shipped:
        notes.append(
            f"{100 * shipped['accuracy']:.2f}% on {shipped['images']} held-out images (seed {shipped['seed']}) "
            "when trained, see README"
        )
    return "; " + "; ".join(notes) if notes else ""


def _table(results: dict[str, dict[str, Any]], tolerance: int) -> str:
    """The printed summary: one line per method."""
    head = f"{'method':<16}{'pointing':>10}{f'pointing±{tolerance}px':>14}{'energy in mask':>16}{'time ms':>10}"
    lines = [head, "-" * len(head)]
    for name, res in results.items():
        lines.append(
            f"{name:<16}{res['pointing_game']:>10.3f}{res['pointing_game_tolerant']:>14.3f}"
            f"{res['energy_in_mask']:>16.3f}{1000 * res['seconds']:>10.1f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from ..demo import CLASS_NAMES, evaluate_maps, generate, load_demo_model
    from ..utils import overlay

    methods = {name: check_method(name) for name in args.methods}
    if args.num_images < 1:
        from .common import CliError

        raise CliError(f"--num-images must be >= 1, got {args.num_images}")
    if args.accuracy_images < 0:
        from .common import CliError

        raise CliError(f"--accuracy-images must be >= 0, got {args.accuracy_images}")
    model = load_demo_model()
    batch = generate(args.num_images, args.seed)
    with torch.no_grad():
        preds = model(batch.images).argmax(1)
    pairs = list(zip(batch.labels.tolist(), preds.tolist(), strict=True))
    titles = [f"{CLASS_NAMES[t]}→{CLASS_NAMES[p]}" for t, p in pairs]
    correct = [t == p for t, p in pairs]
    results: dict[str, dict[str, Any]] = {}
    overlays: dict[str, Tensor] = {}
    for name, method in methods.items():
        maps, seconds = _explain(model, method, batch.images, batch.labels)
        scores = evaluate_maps(maps, batch.masks)
        results[name] = {**asdict(scores), "seconds": seconds}
        overlays[name] = overlay(batch.images, maps)
        for i, image in enumerate(overlays[name]):
            save_png(image, args.out / "overlays" / name / f"{i:03d}_{CLASS_NAMES[int(batch.labels[i])]}.png")
    grid = args.out / "demo_grid.png"
    _grid(batch.images, overlays, titles, correct, grid)
    shipped = shipped_accuracy()
    held_out = None
    if args.accuracy_images:
        seed = shipped["seed"] if shipped else 2_000_000
        held_out = {
            "accuracy": held_out_accuracy(model, args.accuracy_images, seed),
            "images": args.accuracy_images,
            "seed": seed,
        }
    summary = {
        "num_images": args.num_images,
        "seed": args.seed,
        "accuracy": (preds == batch.labels).float().mean().item(),
        "correct": sum(correct),
        "predictions": [{"true": CLASS_NAMES[t], "predicted": CLASS_NAMES[p]} for t, p in pairs],
        "accuracy_at_training": shipped,
        "accuracy_held_out": held_out,
        "class_names": list(CLASS_NAMES),
        "methods": results,
        "grid": str(grid),
        "versions": versions(),
    }
    write_json(summary, args.out / "summary.json")
    tolerance = next(iter(results.values()))["tolerance"]
    print(
        f"demo CNN on {args.num_images} generated images (seed {args.seed}): {sum(correct)}/{args.num_images} "
        f"classified correctly{_accuracy_note(shipped, held_out)}"
    )
    print("CAMs of the true class; pointing game and energy in the object mask (higher is better):")
    print(_table(results, tolerance))
    print(f"wrote {grid}, {args.out / 'summary.json'} and {args.out / 'overlays'}/")
    return 0
