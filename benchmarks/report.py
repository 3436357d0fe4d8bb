"""Turn a saved pytest-benchmark run into the README's ratio table (markdown) and a bar chart (matplotlib PNG).

Usage::

    pytest benchmarks/ --benchmark-only --benchmark-json benchmarks/results/bench_cpu.json
    python benchmarks/report.py benchmarks/results/bench_cpu.json --png docs/benchmarks_cpu.png \
        [--out benchmarks/results/bench_cpu.md]

Without a path it reads the newest ``.benchmarks/**/*.json`` (``pytest --benchmark-autosave``). Each group of the
run is one workload; its ``role == "peer"`` entry (TorchCAM, pytorch-grad-cam) is the baseline and every
``pycam_fast`` entry gets ``speed-up = peer median / pycam_fast median`` (above 1: pycam_fast is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Row", "load_rows", "markdown", "newest_run", "plot", "main"]


@dataclass(frozen=True)
class Row:
    """One workload: the peer's and pycam_fast's median seconds."""

    group: str
    peer: str
    peer_s: float
    ours: str
    ours_s: float

    @property
    def speedup(self) -> float:
        """Peer median / pycam_fast median."""
        return self.peer_s / self.ours_s


def newest_run(root: Path = Path(".benchmarks")) -> Path:
    """The most recently written ``.json`` under ``root`` (pytest-benchmark's autosave folder).

    Raises:
        FileNotFoundError: no saved run.

    """
    runs = sorted(root.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no saved benchmark run under {root}; pass the --benchmark-json file")
    return runs[-1]


def load_rows(data: dict[str, Any]) -> list[Row]:
    """Pair each group's peer with each of its pycam_fast entries (groups without both are left out).

    Args:
        data: the parsed ``--benchmark-json`` file.

    Returns:
        one row per (group, pycam_fast entry), in the run's order of groups.

    """
    groups: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        role = info.get("role", "pycam_fast" if "pycam_fast" in bench["name"] else "peer")
        impl = info.get("impl", bench["name"])
        entry = groups.setdefault(bench.get("group") or bench["name"], {"peer": [], "pycam_fast": []})
        entry.setdefault(role, []).append((impl, float(bench["stats"]["median"])))
    rows = []
    for group, entry in groups.items():
        if not entry["peer"]:
            continue
        peer, peer_s = entry["peer"][0]
        rows += [Row(group, peer, peer_s, ours, ours_s) for ours, ours_s in entry["pycam_fast"]]
    return rows


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}" if seconds < 10 else f"{1000 * seconds:.0f}"


def markdown(rows: list[Row], machine: dict[str, Any] | None = None) -> str:
    """The ratio table (median ms of each side, speed-up), with the run's machine and sizes as a caption."""
    lines = []
    if machine:
        suite = machine.get("pycam_bench", {})
        cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
        sizes = ", ".join(f"{k} {v}" for k, v in suite.items())
        lines += [f"Machine: {cpu}; {sizes}. Medians of the timed rounds (pytest-benchmark).", ""]
    lines += ["| workload | peer | peer (ms) | pycam_fast (ms) | speed-up |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.group} | {r.peer} | {_ms(r.peer_s)} | {_ms(r.ours_s)} | {r.speedup:.2f}x |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, title: str = "pycam_fast speed-up over the peer (median time ratio)") -> None:
    """A horizontal bar per row: the speed-up on a log axis, the 1x line marking parity."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4), dpi=120)
    labels = [f"{r.group}\nvs {r.peer}" for r in rows]
    values = [r.speedup for r in rows]
    colours = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax.barh(range(len(rows)), values, color=colours)
    ax.set_xscale("log")
    low, high = min([*values, 1.0]) / 1.3, max([*values, 1.0]) * 1.4
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200) if low <= t <= high]
    ax.set_xlim(low, high)
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.annotate(f"{value:.2f}x", (value, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlabel("speed-up (peer median / pycam_fast median; > 1: pycam_fast faster)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: print (or write) the table and save the chart; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a --benchmark-json file (default: newest in .benchmarks/)")
    parser.add_argument("--png", type=Path, default=Path("docs/benchmarks.png"), help="chart (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    try:
        path = args.run or newest_run()
    except FileNotFoundError as exc:
        print(f"report.py: {exc}", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    rows = load_rows(data)
    if not rows:
        print(f"report.py: {path} has no group with both a peer and a pycam_fast entry", file=sys.stderr)
        return 2
    table = markdown(rows, data.get("machine_info"))
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    plot(rows, args.png)
    print(f"wrote {args.png}" + (f" and {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
