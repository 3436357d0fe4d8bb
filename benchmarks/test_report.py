"""Checks of ``benchmarks/report.py`` (plain tests: ``pytest benchmarks/test_report.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report import load_rows, main, markdown


def _bench(group: str, name: str, role: str, impl: str, median: float) -> dict:
    return {"group": group, "name": name, "stats": {"median": median}, "extra_info": {"role": role, "impl": impl}}


RUN = {
    "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "pycam_bench": {"size": 96, "batch": 4}},
    "benchmarks": [
        _bench("GradCAM", "test[pycam_fast]", "pycam_fast", "pycam_fast", 0.25),
        _bench("GradCAM", "test[torchcam]", "peer", "TorchCAM", 1.0),
        _bench("overlay", "test_overlay_peer", "peer", "TorchCAM overlay_mask", 0.03),
        _bench("overlay", "test_overlay_ours", "pycam_fast", "pycam_fast overlay", 0.04),
        _bench("alone", "test_alone", "pycam_fast", "pycam_fast", 0.5),  # no peer: left out
    ],
}


def test_rows_pair_peer_and_pycam_fast() -> None:
    rows = load_rows(RUN)
    assert [(r.group, r.peer, r.ours) for r in rows] == [
        ("GradCAM", "TorchCAM", "pycam_fast"),
        ("overlay", "TorchCAM overlay_mask", "pycam_fast overlay"),
    ]
    assert rows[0].speedup == pytest.approx(4.0) and rows[1].speedup == pytest.approx(0.75)
    table = markdown(rows, RUN["machine_info"])
    assert "| GradCAM | TorchCAM | 1000.0 | 250.0 | 4.00x |" in table and "Test CPU" in table
    assert "| overlay | TorchCAM overlay_mask | 30.0 | 40.0 | 0.75x |" in table


def test_main_writes_table_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps(RUN))
    png, md = tmp_path / "docs" / "b.png", tmp_path / "b.md"
    assert main([str(run), "--png", str(png), "--out", str(md)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "4.00x" in md.read_text()
    assert "4.00x" in capsys.readouterr().out
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    assert main([str(empty), "--png", str(png)]) == 2
