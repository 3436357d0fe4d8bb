"""Localisation table of every CAM method on the demo model, printed as markdown.

``python -m pycam_fast.demo.report`` scores each ``pycam_fast.methods`` class on the first ``k`` images of one
seeded set of synthetic shapes (``k`` is smaller for the costly ScoreCAM family), for the true class, with maps at
input resolution. A centre-prior baseline (a Gaussian bump in the middle of the image) shows what a map that
ignores the image scores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .localization import POINTING_TOLERANCE, LocalizationScores, evaluate_maps, evaluate_method
from .model import load_demo_model
from .shapes import generate
from .train import accuracy

__all__ = ["METHODS", "REPORT_SEED", "MethodSpec", "centre_prior", "main", "markdown_table", "run"]

REPORT_SEED = 3_000_000


@dataclass(frozen=True)
class MethodSpec:
    """How one method is evaluated: its class name, how many images and extra constructor kwargs."""

    name: str
    num_images: int
    kwargs: tuple[tuple[str, object], ...] = ()


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("CAM", 1000),
    MethodSpec("GradCAM", 1000),
    MethodSpec("GradCAMpp", 1000),
    MethodSpec("SmoothGradCAMpp", 1000),
    MethodSpec("XGradCAM", 1000),
    MethodSpec("LayerCAM", 1000),
    MethodSpec("ScoreCAM", 200, (("batch_size", 256),)),
    MethodSpec("SSCAM", 24, (("batch_size", 256),)),
    MethodSpec("ISCAM", 60, (("batch_size", 256),)),
)


def centre_prior(n: int, size: int = 64, sigma: float = 0.25) -> Tensor:
    """``(n, size, size)`` copies of an isotropic Gaussian centred in the image (``sigma`` relative to ``size``)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g[:, None] * g[None, :]).expand(n, size, size).contiguous()


def _row(name: str, scores: LocalizationScores | None, seconds: float | None, timings: bool) -> str:
    """One markdown table row (``n/a`` when the method is unavailable)."""
    if scores is None:
        cells = [name, "n/a", "n/a", "n/a", "n/a"]
    else:
        pg, pg_tol, energy = (
            100 * scores.pointing_game,
            100 * scores.pointing_game_tolerant,
            100 * scores.energy_in_mask,
        )
        cells = [name, str(scores.num_images), f"{pg:.1f}", f"{pg_tol:.1f}", f"{energy:.1f}"]
    if timings:
        cells.append("n/a" if seconds is None or scores is None else f"{1000 * seconds / scores.num_images:.1f}")
    return "| " + " | ".join(cells) + " |"


def markdown_table(rows: list[tuple[str, LocalizationScores | None, float | None]], timings: bool = False) -> str:
    """Markdown table of ``(method, scores or None, seconds or None)`` rows."""
    header = [
        "Method",
        "Images",
        "Pointing game (%)",
        f"Pointing game, {POINTING_TOLERANCE} px (%)",
        "Energy in mask (%)",
    ]
    if timings:
        header.append("ms / image")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += [_row(name, scores, seconds, timings) for name, scores, seconds in rows]
    return "\n".join(lines)


def _evaluate(spec: MethodSpec, model: torch.nn.Module, data: tuple[Tensor, Tensor, Tensor]) -> LocalizationScores:
    """Scores of one method on the first ``spec.num_images`` images."""
    images, labels, masks = (t[: spec.num_images] for t in data)
    return evaluate_method(spec.name, model, images, labels, masks, batch_size=50, method_kwargs=dict(spec.kwargs))


def run(
    methods: tuple[MethodSpec, ...] = METHODS, seed: int = REPORT_SEED, scale: float = 1.0
) -> list[tuple[str, LocalizationScores | None, float | None]]:
    """Evaluate the centre prior and every method; unavailable methods (ImportError/AttributeError) give None.

    Args:
        methods: what to evaluate.
        seed: seed of the image set.
        scale: multiplies every method's image count (e.g. 0.1 for a quick run).

    Returns:
        ``(name, scores or None, seconds or None)`` rows, the baseline first.

    """
    specs = [MethodSpec(m.name, max(1, round(m.num_images * scale)), m.kwargs) for m in methods]
    n = max(s.num_images for s in specs)
    batch = generate(n, seed)
    data = (batch.images, batch.labels, batch.masks)
    model = load_demo_model()
    rows: list[tuple[str, LocalizationScores | None, float | None]] = [
        ("Centre prior (baseline)", evaluate_maps(centre_prior(n), batch.masks), None)
    ]
    print(f"demo model accuracy on these {n} images: {100 * accuracy(model, batch.images, batch.labels):.1f}%")
    for spec in specs:
        start = time.perf_counter()
        try:
            scores = _evaluate(spec, model, data)
        except (ImportError, AttributeError) as exc:
            print(f"{spec.name}: unavailable ({exc})")
            rows.append((spec.name, None, None))
            continue
        rows.append((spec.name, scores, time.perf_counter() - start))
        print(f"{spec.name}: done in {rows[-1][2]:.1f}s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    """Command-line entry point: print (and return) the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=REPORT_SEED)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every method's image count")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of method names")
    parser.add_argument("--timings", action="store_true", help="add a ms/image column (machine dependent)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = tuple(m for m in METHODS if args.methods is None or m.name in args.methods)
    table = markdown_table(run(methods, seed=args.seed, scale=args.scale), timings=args.timings)
    print(f"\nSeed {args.seed}; maps for the true class at 64x64; target layer `features.block3` (16x16).\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
