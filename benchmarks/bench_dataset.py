"""Dataset runs: the pipeline's overhead over the bare Explainer, and several methods in one pass vs separate runs.

Usage: python benchmarks/bench_dataset.py [--images 256] [--size 224] [--batch 64] [--threads 2]
    [--parts pipeline multi dist] [--out benchmarks/results/dataset_cpu.md]

ResNet-18 (random weights), channels-last private copy, ``--threads`` intra-op threads.

- pipeline: ``explain_dataset`` on a folder of PNGs (DataLoader with 1 worker decoding, background shard writer,
  fp32 maps at input size, Parquet index) vs a fresh ``Explainer`` looping over the same images pre-loaded as
  tensors, batch ``--batch``; both include building the Explainer (target: pipeline <= 1.10x the bare loop).
- multi: ``Explainer(methods=[6 gradient methods])`` vs 6 one-method Explainers on one batch, layer4 (closed-form
  gradients) and layer3 (tail autograd) (target: >= 4x).
- dist: the pipeline as 2 ranks x 1 thread (gloo, launched like torchrun) vs 1 rank x 2 threads (target >= 0.9x).
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from _machine import cpu_name, load_average
from PIL import Image

GRADIENT = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise"]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _images(folder: Path, n: int, size: int) -> torch.Tensor:
    """``n`` random PNGs in ``folder``; returns them as the ``(n, 3, size, size)`` inputs the pipeline decodes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    for i, arr in enumerate(arrays):
        Image.fromarray(arr).save(folder / f"img_{i:05d}.png")
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def _pipeline(model: torch.nn.Module, x: torch.Tensor, folder: Path, tmp: Path, batch: int) -> list[tuple]:
    from pycam_fast import Explainer
    from pycam_fast.dataset import explain_dataset

    def bare() -> None:
        explainer = Explainer(model, "gradcam", "layer4", channels_last=True)
        for i in range(0, len(x), batch):
            explainer(x[i : i + batch])

    def pipeline(out: Path) -> None:
        explain_dataset(
            folder, model, ["gradcam"], out, target_layer="layer4", image_size=x.shape[-1], batch_size=batch,
            shard_size=2 * batch, num_workers=1, channels_last=True,
        )  # fmt: skip

    with torch.no_grad():
        model(x[:batch])  # warm-up of the convolution primitives
    rows = []
    start = time.perf_counter()
    bare()
    t_bare = time.perf_counter() - start
    start = time.perf_counter()
    pipeline(tmp / "pipeline")
    t_pipe = time.perf_counter() - start
    n = len(x)
    rows.append(("bare Explainer, pre-loaded tensors (gradcam)", t_bare, n / t_bare, "1.00x"))
    rows.append(("explain_dataset, PNG folder -> shards (gradcam)", t_pipe, n / t_pipe, f"{t_pipe / t_bare:.2f}x"))
    return rows


def _multi(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[tuple]:
    from pycam_fast import Explainer

    rows = []
    for layer, path in (("layer4", "closed form"), ("layer3", "tail autograd")):
        multi = Explainer(model, methods=GRADIENT, target_layer=layer, channels_last=True)
        singles = [Explainer(model, m, layer, channels_last=True) for m in GRADIENT]

        def run_multi(multi: Explainer = multi) -> None:
            multi(x)

        def run_singles(singles: list = singles) -> None:
            for explainer in singles:
                explainer(x)

        t_multi, t_sep = _timed(run_multi, repeats), _timed(run_singles, repeats)
        n = len(x)
        rows.append((f"6 separate Explainers ({layer}, {path})", t_sep, n / t_sep, "1.00x"))
        rows.append((f"Explainer(methods=6) ({layer}, {path})", t_multi, n / t_multi, f"{t_sep / t_multi:.2f}x"))
    return rows


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: private copy, oneDNN primitives
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


_RANK_SCRIPT = """
import sys, torch, torchvision
sys.path.insert(0, {bench!r})
from pycam_fast.dataset import explain_dataset
torch.set_num_threads({threads})
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
explain_dataset({folder!r}, model, ["gradcam"], {out!r}, target_layer="layer4", image_size={size}, batch_size={batch},
                shard_size={batch}, num_workers=0, channels_last=True)
"""


def _dist(folder: Path, tmp: Path, size: int, batch: int) -> list[tuple]:
    def launch(world: int, threads: int, out: Path) -> float:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        script = _RANK_SCRIPT.format(
            bench=str(Path(__file__).parent), threads=threads, folder=str(folder), out=str(out), size=size, batch=batch
        )
        start = time.perf_counter()
        procs = []
        for rank in range(world):
            env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank)}
            env |= {"WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": str(threads)}
            procs.append(subprocess.Popen([sys.executable, "-c", script], env=env))
        if any(p.wait() for p in procs):
            raise RuntimeError("a rank failed")
        return time.perf_counter() - start

    n = len(list(folder.iterdir()))
    t_one = launch(1, 2, tmp / "one")
    t_two = launch(2, 1, tmp / "two")
    return [
        ("1 rank x 2 threads (process start included)", t_one, n / t_one, "1.00x"),
        ("2 ranks x 1 thread, gloo (process start included)", t_two, n / t_two, f"{t_one / t_two:.2f}x"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["pipeline", "multi", "dist"])
    parser.add_argument("--out", default="benchmarks/results/dataset_cpu.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = _model()
    sections: list[tuple[str, str, list[tuple]]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        x = _images(tmp / "images", args.images, args.size)
        if "pipeline" in args.parts:
            rows = _pipeline(model, x, tmp / "images", tmp, args.batch)
            sections.append(
                ("Pipeline overhead", f"{args.images} images, batch {args.batch}; ratio: time vs the bare loop", rows)
            )
            _print(rows)
        if "multi" in args.parts:
            rows = _multi(model, x[: args.batch], args.repeats)
            note = f"one batch of {args.batch}, mean of {args.repeats} calls after a warm-up; ratio: speed-up"
            sections.append(("Six gradient methods: one pass vs separate runs", note, rows))
            _print(rows)
        if "dist" in args.parts:
            rows = _dist(tmp / "images", tmp, args.size, args.batch)
            note = f"{args.images} images, batch {args.batch}; ratio: throughput vs 1 rank"
            sections.append(("Distributed overhead (CPU, gloo)", note, rows))
            _print(rows)
    _write(args, sections)


def _print(rows: list[tuple]) -> None:
    for name, s, ips, ratio in rows:
        print(f"{name:60s} {s:8.3f} s {ips:8.1f} img/s {ratio}", flush=True)


def _write(args: argparse.Namespace, sections: list[tuple[str, str, list[tuple]]]) -> None:
    lines = [
        "# Dataset runs, CPU",
        "",
        f"Date {datetime.date.today()}, {cpu_name()}, {args.threads} threads, torch {torch.__version__}, load average "
        f"at the end {load_average()}. ResNet-18 random weights, {args.size}x{args.size}, channels-last private copy. "
        f"Command: `python benchmarks/bench_dataset.py {' '.join(sys.argv[1:])}`.",
    ]
    for title, note, rows in sections:
        lines += ["", f"## {title}", "", note, "", "| variant | s | img/s | ratio |", "|---|---|---|---|"]
        lines += [f"| {name} | {s:.3f} | {ips:.1f} | {ratio} |" for name, s, ips, ratio in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
