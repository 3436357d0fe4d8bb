"""``pycam-fast explain-dataset``: explain a whole image folder or file list into resumable sharded outputs.

Runs as one process or under ``torchrun`` (one rank per GPU / CPU process; rank 0 merges the index); see
:func:`pycam_fast.dataset.explain_dataset` for the output layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    CliError,
    add_command,
    add_progress_option,
    add_seed_option,
    check_method,
    method_choices,
    progress_wanted,
)
from .explain import _MODEL_HELP, _check_backend, _class_index, _num_classes, _target_layer, load_model

__all__ = ["add_parser", "run"]

#: options passed on to :func:`pycam_fast.dataset.explain_dataset` under their own name
_PASSED_AS_IS = ("batch_size", "shard_size", "resolution", "precision", "backend", "channels_last", "index", "seed")


#: ``pycam-fast explain-dataset``'s line in ``pycam-fast --help`` and paragraph in its own ``--help``
_HELP = """
explain a whole dataset: sharded maps (safetensors), a Parquet/JSONL index and a manifest; resumable, several methods
per pass, torchrun-aware
"""
_DESCRIPTION = """
Explain every image of IMAGES (a folder, searched recursively, or a file list .txt/.lst/.csv with one path per line)
with one or several methods (--method, repeatable: the gradient and activation methods share one forward) and write
OUT/shards/shard-KKKKK.safetensors (one (n, H, W) tensor per method), OUT/index.parquet (or .jsonl: sample_id, source,
shard, offset, predicted, target, score, probability, error) and OUT/manifest.json. Rerunning the same command resumes
(finished shards are skipped). Under torchrun every rank explains its own shards (gloo on CPU, NCCL on GPU, one GPU per
LOCAL_RANK). Read the results with pycam_fast.open_results(OUT). Images that cannot be read are recorded in the index
with their error and the run goes on (exit status 0; 1 with --strict).
"""


def add_parser(subparsers: Any) -> None:
    """Register the ``explain-dataset`` sub-command."""
    parser = add_command(subparsers, "explain-dataset", run, _HELP, _DESCRIPTION)
    parser.add_argument("images", type=Path, metavar="IMAGES", help="image folder or file list")
    parser.add_argument("--model", default="demo", help=_MODEL_HELP + " (default: %(default)s)")
    parser.add_argument(
        "--method",
        dest="methods",
        action="append",
        default=None,
        help=f"CAM method, repeatable, case-insensitive: {method_choices()} (default: GradCAM)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (an existing run is resumed)")
    parser.add_argument(
        "--layer", default=None, help="target layer name, from model.named_modules() (default: the model's / automatic)"
    )
    parser.add_argument("--class", dest="class_idx", default=None, help="class index or name (default: predicted)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=1024, help="images per shard file (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes (default: %(default)s)")
    parser.add_argument(
        "--device", default="auto", help="'auto' (cuda:LOCAL_RANK if available), 'cpu', 'cuda' (default: %(default)s)"
    )
    parser.add_argument("--backend", default="auto", help="CAM ops backend: auto, torch, cpp, cuda, triton")
    parser.add_argument("--size", type=int, default=None, help="input side in pixels (default: 64 demo, else 224)")
    parser.add_argument(
        "--resolution",
        choices=("input", "feature"),
        default="input",
        help="map size: the input's or the target layer's (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype", choices=("fp32", "fp16", "uint8"), default="fp32", help="stored map dtype (default: %(default)s)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast (default: %(default)s)"
    )
    parser.add_argument("--channels-last", action="store_true", help="channels-last private copy for the forward")
    parser.add_argument(
        "--index", choices=("auto", "parquet", "jsonl"), default="auto", help="index format (default: %(default)s)"
    )
    add_seed_option(parser)
    add_progress_option(parser, "a progress bar with images/s on rank 0")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit status 1 when some images failed (default: 0)",
    )


def run(args: argparse.Namespace) -> int:
    """Explain the dataset; returns 0 (1 with ``--strict`` when some images failed)."""
    from ..dataset import explain_dataset
    from ..dataset.distributed import _device, env_ranks

    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise CliError(f"--workers must be >= 0, got {args.workers}")
    if not args.images.exists():
        raise CliError(f"{args.images}: no such folder or file list")
    rank, _, local_rank = env_ranks()
    try:
        device = _device(args.device, local_rank)
    except RuntimeError as exc:
        raise CliError(f"unknown device {args.device!r}") from exc
    methods = [check_method(name) for name in (args.methods or ["GradCAM"])]
    _check_backend(args.backend, device)
    loaded = load_model(args.model, args.seed)
    size = args.size or loaded.size
    layer = _target_layer(loaded.model, args.layer or loaded.default_layer, size)
    num_classes = _num_classes(loaded.model, size, device) if args.class_idx is not None else None
    class_idx = _class_index(args.class_idx, loaded.class_names, num_classes)
    progress = progress_wanted(args.progress)
    try:
        summary = explain_dataset(
            args.images,
            loaded.model,
            methods,
            args.out,
            target_layer=layer,
            class_idx=class_idx,
            image_size=size,
            mean=loaded.mean,
            std=loaded.std,
            num_workers=args.workers,
            device=device,
            map_dtype=args.dtype,
            model_name=args.model,
            progress=progress,
            **{name: getattr(args, name) for name in _PASSED_AS_IS},
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    if rank == 0:
        print(
            f"explained {summary.explained} image(s) in {summary.wall_s:.1f} s ({summary.images_per_s:.1f} images/s, "
            f"{summary.world_size} rank(s)); {summary.skipped_shards} shard(s) already done; {summary.num_samples} "
            f"samples, {summary.errors} error(s) in the result set; wrote {args.out}"
        )
    return 1 if summary.errors and args.strict else 0
