"""Verdict of a GPU session on the v2 CUDA kernels (``PYCAM_FAST_CUDA_KERNELS=v2``), written by gpu_session.sh.

Reads the pytest logs of the v2 test groups (``v2_tests_<group>.txt``: the CUDA-backend cases of tests/ops plus
tests/ops/test_cuda_v2.py, run with the switch on) and the side-by-side benchmark JSON of
``bench_ops.py --cuda-kernels v1 v2 --json``, and writes ``verdict.md`` / ``verdict.json``: per op, whether the v2
tests pass, the v2/v1 speed at every size, v2's percentage of a device-to-device copy at the largest size, and the
decision (flip the default to v2, or keep v1 and why). A script, not a test: it reports, it asserts nothing.

Usage::

    python benchmarks/cuda_v2_verdict.py --dir benchmarks/results/gpu_run
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

#: test group (log file suffix) -> the ops it covers
GROUPS = {
    "cam_step": ["cam_step"],
    "weights": ["gradcam_weights", "xgradcam_weights", "gradcampp_weights", "gradcampp_weights_torchcam"],
    "masked": ["masked_inputs"],
    "switch": [],
}
#: v2 counts as "not slower" within this factor of v1's time (timing noise of a ~10 us kernel)
SLOWER_TOLERANCE = 1.03
#: issue 16's bandwidth target at the largest size
TARGET_PCT = 70.0


def parse_pytest(path: Path) -> dict[str, object]:
    """Counts of a ``pytest -q`` log; ``ok`` is False when it failed, errored, crashed or timed out."""
    if not path.exists():
        return {"ok": False, "summary": "log missing (not run)", "failed": []}
    text = path.read_text(errors="replace")
    counts = {k: 0 for k in ("passed", "failed", "error", "errors", "skipped")}
    summary = ""
    for line in text.splitlines():
        if re.search(r"\d+ (passed|failed|errors?|skipped)", line) and (" in " in line or line.startswith("=")):
            summary = line.strip("= ")
            for num, key in re.findall(r"(\d+) (passed|failed|errors?|skipped)", line):
                counts[key] = int(num)
    failed = [ln.split(" - ")[0].split(" ", 1)[1] for ln in text.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    if not summary:
        return {"ok": False, "summary": "no pytest summary (crash or timeout)", "failed": failed}
    bad = counts["failed"] + counts["error"] + counts["errors"]
    return {"ok": bad == 0 and counts["passed"] > 0, "summary": summary, "failed": failed[:20]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the session's results folder")
    parser.add_argument("--bench", type=Path, default=None, help="bench JSON (default: DIR/ops_cuda_v1_v2.json)")
    args = parser.parse_args()
    bench_path = args.bench or args.dir / "ops_cuda_v1_v2.json"
    tests = {g: parse_pytest(args.dir / f"v2_tests_{g}.txt") for g in GROUPS}
    v1_tests = parse_pytest(args.dir / "v1_tests_ops.txt")  # written by step 5, after the first verdict
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else {"meta": {}, "rows": []}
    copy_gbs = bench["meta"].get("copy_gbs")

    by_op: dict[str, dict[str, dict[str, dict]]] = {}
    for r in bench["rows"]:
        by_op.setdefault(r["op"], {}).setdefault(r["size"], {})[r["kernels"]] = r
    verdicts = {}
    for group, ops in GROUPS.items():
        for op in ops:
            sizes = by_op.get(op, {})
            per_size = []
            slower = []
            for size, variants in sizes.items():
                if "v1" not in variants or "v2" not in variants:
                    continue
                v1, v2 = variants["v1"], variants["v2"]
                speedup = v1["kernel_ms"] / v2["kernel_ms"]
                per_size.append(
                    {
                        "size": size,
                        "v1_ms": v1["kernel_ms"],
                        "v2_ms": v2["kernel_ms"],
                        "v2_speedup": speedup,
                        "v1_pct_copy": v1["pct_copy"],
                        "v2_pct_copy": v2["pct_copy"],
                        "torch_ms": v2["torch_ms"],
                        "v2_vs_torch": v2["torch_ms"] / v2["kernel_ms"],
                    }
                )
                if v2["kernel_ms"] > SLOWER_TOLERANCE * v1["kernel_ms"]:
                    slower.append(size)
            largest = max(per_size, key=lambda s: sizes[s["size"]]["v2"]["bytes"], default=None)
            passed = bool(tests[group]["ok"]) and bool(tests["switch"]["ok"])
            if not per_size:
                decision = "keep v1: no benchmark rows"
            elif not passed:
                decision = "keep v1: v2 tests fail"
            elif slower:
                decision = f"keep v1: v2 slower at {', '.join(slower)}"
            else:
                decision = "flip to v2"
            verdicts[op] = {
                "tests": tests[group],
                "sizes": per_size,
                "largest": largest,
                "meets_target": bool(largest and (largest["v2_pct_copy"] or 0) >= TARGET_PCT),
                "decision": decision,
            }

    flip = [op for op, v in verdicts.items() if v["decision"] == "flip to v2"]
    keep = [op for op in verdicts if op not in flip]
    if verdicts and not keep:
        overall = "FLIP the default to v2 for every op (make kV2 the default in csrc/ops/cuda/v2_plan.h parse_kernels)"
    elif flip:
        overall = f"PARTIAL: v2 wins for {', '.join(flip)}; keep v1 for {', '.join(keep)} (needs a per-op default)"
    else:
        overall = "KEEP v1 as the default"
    meta = bench["meta"]
    lines = [
        "# CUDA kernels v1 vs v2 (PYCAM_FAST_CUDA_KERNELS) verdict",
        "",
        f"- machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}; date {meta.get('date', '?')}",
        f"- device-to-device copy: {copy_gbs:.0f} GB/s" if copy_gbs else "- device-to-device copy: not measured",
        f"- v1 tests (tests/ops, default switch): {v1_tests['summary']}",
        f"- switch / profiler tests: {tests['switch']['summary']}",
        f"- **overall: {overall}**",
        "",
        "| op | v2 tests | size | v1 ms | v2 ms | v2 speedup | v1 % copy | v2 % copy | v2 vs torch | decision |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op, v in verdicts.items():
        status = "pass" if v["tests"]["ok"] else f"FAIL ({v['tests']['summary']})"
        for i, s in enumerate(v["sizes"]):
            pct1 = "-" if s["v1_pct_copy"] is None else f"{s['v1_pct_copy']:.0f}%"
            pct2 = "-" if s["v2_pct_copy"] is None else f"{s['v2_pct_copy']:.0f}%"
            lines.append(
                f"| {op if i == 0 else ''} | {status if i == 0 else ''} | {s['size']} | {s['v1_ms']:.4f} | "
                f"{s['v2_ms']:.4f} | {s['v2_speedup']:.2f}x | {pct1} | {pct2} | {s['v2_vs_torch']:.2f}x | "
                f"{v['decision'] if i == 0 else ''} |"
            )
        if not v["sizes"]:
            lines.append(f"| {op} | {status} | - | - | - | - | - | - | - | {v['decision']} |")
    failed = [f for g in GROUPS for f in tests[g]["failed"]]
    if failed:
        lines += ["", "Failed v2 tests (first 20 per group):", "", *[f"- `{f}`" for f in failed]]
    lines += [
        "",
        f"Target (issue 16): >= {TARGET_PCT:.0f}% of copy at the largest size: "
        + ", ".join(f"{op} {'met' if v['meets_target'] else 'not met'}" for op, v in verdicts.items()),
    ]
    text = "\n".join(lines) + "\n"
    (args.dir / "verdict.md").write_text(text)
    summary = {"overall": overall, "v1_tests": v1_tests, "switch_tests": tests["switch"], "ops": verdicts}
    (args.dir / "verdict.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
