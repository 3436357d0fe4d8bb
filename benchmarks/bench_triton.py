"""Triton vs CUDA C++ vs torch vs torch.compile, per op, on a GPU; regenerates the ``auto`` table.

For every op and a few realistic shapes (ResNet-50 layer3/layer4 CAMs, LayerCAM at 56x56, Score-CAM batches), this
times each backend with ``triton.testing.do_bench`` (median, L2 flushed between runs), checks its result against the
reference, and reports the achieved bandwidth (minimum bytes: every input read once + the output written once)
as a fraction of a measured device-to-device copy. Then it rewrites

* ``pycam_fast/ops/auto_table.json``: per op, the faster *correct* compiled backend (``triton`` or ``cuda``) by the
  geometric mean of its cases' times (ops where neither is available stay out of the table);
* ``benchmarks/results/triton_gpu.md``: the full results.

Usage (on a machine with a CUDA GPU; without one it exits with status 2 and writes nothing)::

    python benchmarks/bench_triton.py            # measure and write both files
    python benchmarks/bench_triton.py --dry-run  # measure and print only
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TABLE_PATH = ROOT / "pycam_fast" / "ops" / "auto_table.json"
RESULTS_PATH = ROOT / "benchmarks" / "results" / "triton_gpu.md"
COMPILED = ("triton", "cuda")  # the backends the auto table chooses between


@dataclass
class Case:
    op: str
    label: str
    make: Callable[[], tuple[tuple, dict]]
    results: dict[str, dict] = field(default_factory=dict)


def _cases(dev: str) -> list[Case]:
    def t(*shape, dtype=torch.float32, positive=False):
        x = torch.rand(shape, device=dev) if positive else torch.randn(shape, device=dev)
        return x.to(dtype)

    f16 = torch.float16
    s224 = {"output_size": (224, 224)}

    def pos(*shape):
        return t(*shape, positive=True)

    return [
        Case("cam_step", "N8 C2048 7x7 -> 224 fp32", lambda: ((t(8, 2048), t(8, 2048, 7, 7)), s224)),
        Case("cam_step", "N8 C2048 7x7 -> 224 fp16",
             lambda: ((t(8, 2048, dtype=f16), t(8, 2048, 7, 7, dtype=f16)), s224)),
        Case("cam_step", "N8 C1024 14x14 -> 224 fp32", lambda: ((t(8, 1024), t(8, 1024, 14, 14)), s224)),
        Case("cam_step", "LayerCAM N8 C256 56x56 -> 224", lambda: ((t(8, 256, 56, 56), t(8, 256, 56, 56)), s224)),
        Case("cam_step", "N1 C2048 7x7 -> 224 fp32", lambda: ((t(1, 2048), t(1, 2048, 7, 7)), s224)),
        Case("gradcam_weights", "N8 C2048 7x7", lambda: ((t(8, 2048, 7, 7),), {})),
        Case("gradcam_weights", "N8 C1024 14x14", lambda: ((t(8, 1024, 14, 14),), {})),
        Case("xgradcam_weights", "N8 C1024 14x14", lambda: ((t(8, 1024, 14, 14), pos(8, 1024, 14, 14)), {})),
        Case("gradcampp_weights", "N8 C1024 14x14", lambda: ((t(8, 1024, 14, 14), pos(8, 1024, 14, 14)), {})),
        Case("gradcampp_weights", "N8 C256 56x56", lambda: ((t(8, 256, 56, 56), pos(8, 256, 56, 56)), {})),
        Case("gradcampp_weights_torchcam", "N8 C1024 14x14", lambda: ((t(8, 1024, 14, 14),), {})),
        Case("masked_inputs", "C2048 7x7 x 3x224 fp32, 64 pairs",
             lambda: ((t(1, 2048, 7, 7), t(1, 3, 224, 224), 0, 64), {})),
        Case("masked_inputs", "C2048 7x7 x 3x224 -> fp16 CL, 64 pairs",
             lambda: ((t(1, 2048, 7, 7), t(1, 3, 224, 224), 0, 64), {"out_dtype": f16, "channels_last": True})),
        Case("masked_inputs", "SSCAM noise, 32 pairs",
             lambda: ((t(1, 2048, 7, 7), t(1, 3, 224, 224), 100, 132), {"noise": t(32, 224, 224)})),
    ]  # fmt: skip


def _nbytes(args: tuple, kwargs: dict, out: torch.Tensor) -> int:
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return sum(x.numel() * x.element_size() for x in tensors) + out.numel() * out.element_size()


def _copy_bandwidth(do_bench) -> float:
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3) / 1e9


class _Backend:
    """The public ops of :mod:`pycam_fast.ops` pinned to one backend (``impl.cam_step(...)``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, op: str) -> Callable:
        from pycam_fast import ops

        return functools.partial(getattr(ops, op), backend=self.name)


def _implementations() -> dict[str, object]:
    from pycam_fast import ops

    impls: dict[str, object] = {"torch": _Backend("torch")}
    for name in COMPILED:
        info = ops.backends().get(name)
        if info and info["available"]:
            impls[name] = _Backend(name)
        else:
            print(f"[bench] backend {name!r} unavailable: {info and info['reason']}", file=sys.stderr)
    return impls


def measure(reps_ms: int) -> tuple[list[Case], float, list[str]]:
    from triton.testing import do_bench

    from pycam_fast.ops import reference

    impls = _implementations()
    compiled_ref: dict[str, Callable] = {}
    copy_gbs = _copy_bandwidth(do_bench)
    cases = _cases("cuda")
    for case in cases:
        args, kwargs = case.make()
        expected = getattr(reference, case.op)(
            *(a.double() if isinstance(a, torch.Tensor) else a for a in args),
            **{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()},
        )
        runners = {name: getattr(impl, case.op) for name, impl in impls.items()}
        if case.op not in compiled_ref:
            compiled_ref[case.op] = torch.compile(getattr(reference, case.op), dynamic=False)
        runners["torch.compile"] = compiled_ref[case.op]
        for name, fn in runners.items():
            try:
                out = fn(*args, **kwargs)
                torch.cuda.synchronize()
                tol = 1e-3 if out.dtype == torch.float32 else 2e-2
                ok = torch.allclose(out.double(), expected.to(out.dtype).double(), rtol=tol, atol=tol, equal_nan=True)
                ms = do_bench(lambda fn=fn, a=args, k=kwargs: fn(*a, **k), warmup=25, rep=reps_ms, return_mode="median")
                gbs = _nbytes(args, kwargs, out) / (ms * 1e-3) / 1e9
                case.results[name] = {"ms": ms, "gbs": gbs, "copy_frac": gbs / copy_gbs, "ok": ok}
            except Exception as exc:  # a backend failing on a case is a result, not a crash
                case.results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            print(f"[bench] {case.op:28s} {case.label:40s} {name:14s} {case.results[name]}", file=sys.stderr)
    return cases, copy_gbs, list(runners)


def choose(cases: list[Case]) -> dict[str, str]:
    """Per op, the compiled backend with the lowest geometric-mean time over the op's cases (correct on all)."""
    table: dict[str, str] = {}
    for op in dict.fromkeys(c.op for c in cases):
        op_cases = [c for c in cases if c.op == op]
        scores = {}
        for name in COMPILED:
            runs = [c.results.get(name, {}) for c in op_cases]
            if all(r.get("ok") for r in runs):
                scores[name] = math.exp(sum(math.log(r["ms"]) for r in runs) / len(runs))
        if scores:
            table[op] = min(scores, key=scores.get)
    return table


def _measured_on(copy_gbs: float) -> str:
    import triton

    name = torch.cuda.get_device_name()
    day = datetime.date.today().isoformat()
    return (
        f"{name}, torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, "
        f"copy {copy_gbs:.0f} GB/s, {day}"
    )


def write_table(table: dict[str, str], measured_on: str) -> None:
    """Rewrite the CUDA entries of the auto table (the data ``pycam_fast.ops.dispatch`` reads); others are kept."""
    data = json.loads(TABLE_PATH.read_text())
    data["measured_on"] = f"{measured_on} (benchmarks/bench_triton.py)"
    data["ops"]["cuda"] = dict(sorted(table.items()))
    TABLE_PATH.write_text(json.dumps(data, indent=2) + "\n")


def write_markdown(cases: list[Case], names: list[str], table: dict[str, str], measured_on: str) -> None:
    lines = [
        "# Triton vs CUDA C++ vs torch vs torch.compile (GPU)",
        "",
        f"Measured on: {measured_on}. Generated by `benchmarks/bench_triton.py`; median of `triton.testing.do_bench`",
        "(L2 flushed). GB/s counts every input read once and the output written once; `% copy` is that bandwidth",
        "over a device-to-device copy's. `ok`: matches the float64 reference (rtol/atol 1e-3 fp32, 2e-2 fp16).",
        "",
        "## Auto table (`pycam_fast/ops/auto_table.json`)",
        "",
        "| op | preferred |",
        "|---|---|",
        *[f"| {op} | {backend} |" for op, backend in table.items()],
        "",
        "## Results",
        "",
        "| op | case | backend | ms | GB/s | % copy | ok |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for case in cases:
        for name in names:
            r = case.results.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {case.op} | {case.label} | {name} | - | - | - | {r['error']} |")
            else:
                lines.append(
                    f"| {case.op} | {case.label} | {name} | {r['ms']:.4f} | {r['gbs']:.0f} | "
                    f"{100 * r['copy_frac']:.0f}% | {'yes' if r['ok'] else 'NO'} |"
                )
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rep-ms", type=int, default=200, help="do_bench measuring time per case and backend")
    parser.add_argument("--dry-run", action="store_true", help="print the results, write nothing")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("bench_triton.py: TRITON_INTERPRET=1 is set; unset it to time compiled kernels.", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            "bench_triton.py needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured, "
            f"{TABLE_PATH.relative_to(ROOT)} and {RESULTS_PATH.relative_to(ROOT)} left as they are.",
            file=sys.stderr,
        )
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("bench_triton.py needs triton installed.", file=sys.stderr)
        return 2
    cases, copy_gbs, names = measure(args.rep_ms)
    table = choose(cases)
    measured_on = _measured_on(copy_gbs)
    print(f"auto table ({measured_on}): {table}")
    if not args.dry_run:
        write_table(table, measured_on)
        write_markdown(cases, names, table, measured_on)
        print(f"wrote {TABLE_PATH.relative_to(ROOT)} and {RESULTS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
