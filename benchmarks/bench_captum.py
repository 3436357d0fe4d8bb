"""``LayerGradCam.attribute``: pycam_fast.compat.captum against Captum 0.9, side by side in one process (CPU).

ResNet-18 (torchvision, random weights, seed 0, eval mode), batch 16 at 224x224, one class per sample. The two calls
alternate (``--rounds`` rounds, the fastest of each kept) so drift on a shared machine hits both alike; one warm-up
call each first (pycam_fast builds its private inference copy there, once per ``LayerGradCam`` object). The maps are
compared too (max abs difference relative to Captum's largest value).

Usage: python benchmarks/bench_captum.py [--layers layer4 layer3] [--rounds 5] [--threads 2]
       [--out benchmarks/results/captum_cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import captum
import captum.attr as ca
import torch
from _machine import cpu_name, load_average, random_resnet18

import pycam_fast.compat.captum as pc


def _best(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/captum_cpu.md")
    args = parser.parse_args()
    model = random_resnet18(args.threads)
    x = torch.randn(args.batch, 3, args.size, args.size)
    target = torch.randint(0, 1000, (args.batch,)).tolist()
    rows = []
    for layer_name in args.layers:
        layer = model.get_submodule(layer_name)
        theirs, mine = ca.LayerGradCam(model, layer), pc.LayerGradCam(model, layer)
        times = _best(
            {"captum": lambda c=theirs: c.attribute(x, target), "pycam_fast": lambda c=mine: c.attribute(x, target)},
            args.rounds,
        )
        ref = theirs.attribute(x, target).detach()
        diff = float((mine.attribute(x, target) - ref).abs().max() / ref.abs().max())
        rows.append(
            {
                "layer": layer_name,
                "captum_s": times["captum"],
                "pycam_fast_s": times["pycam_fast"],
                "speedup": times["captum"] / times["pycam_fast"],
                "max_rel_diff": diff,
            }
        )
        print(rows[-1], flush=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "captum": captum.__version__,
        "batch": args.batch,
        "size": args.size,
        "rounds": args.rounds,
        "load_average": load_average(),
        "command": "python benchmarks/bench_captum.py",
    }
    lines = [
        "# LayerGradCam.attribute vs Captum 0.9 (CPU)",
        "",
        f"Date {meta['date']}, {meta['cpu']}, {args.threads} threads, torch {meta['torch']}, captum {meta['captum']}. "
        f"ResNet-18 random weights (seed 0), eval mode, batch {args.batch} x {args.size}px, one class per sample; "
        f"calls alternate, fastest of {args.rounds} after one warm-up each. Load average at the end: "
        f"{meta['load_average']}. Command: `{meta['command']}`.",
        "",
        "| layer | Captum s | pycam_fast s | speed-up | max diff / max |Captum| |",
        "|---|---|---|---|---|",
        *(
            f"| {r['layer']} | {r['captum_s']:.3f} | {r['pycam_fast_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['max_rel_diff']:.1e} |"
            for r in rows
        ),
        "",
        "pycam_fast's path here: the private inference copy (batchnorm folded, channels-last), closed-form gradients "
        "of the `avgpool -> fc` head (layer4) or tail-only autograd (layer3), fused weights + channel sum.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
