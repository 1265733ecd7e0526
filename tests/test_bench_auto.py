"""scripts/bench_auto.py end to end on a one-window synthetic scene with the untuned tiny model:
both sides run on the same windows, every point is decoded on one side, and the summary says
so; with --fine-pass a third side adds the fine pass's windows and calls."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_segment import export_tiny

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_auto.py"


def test_bench_auto_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("bench_auto", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks itself up there
    spec.loader.exec_module(bench)
    model = export_tiny(tmp_path)
    out = tmp_path / "bench"
    args = ["--model", str(model), "--size", "256", "--seed", "3", "--points-per-side", "4"]
    args += ["--pred-iou-thresh", "0", "--stability-thresh", "0", "-o", str(out), "--fine-pass"]
    monkeypatch.setattr(sys, "argv", ["bench_auto.py", *args])
    bench.main()
    summary = json.loads((out / "bench_auto.json").read_text())
    every, skip, fine = summary["sides"]
    assert (every["name"], skip["name"]) == ("every point", "skip found")
    assert fine["name"] == "skip found + fine pass"
    assert fine["windows"] >= skip["windows"] and fine["decoder_calls"] >= skip["decoder_calls"]
    assert every["windows"] == skip["windows"] == 1
    assert every["decoder_calls"] == 16 and 0 < skip["decoder_calls"] <= 16
    assert summary["km2"] == pytest.approx(256 * 256 / 1e6, rel=0.01)
    assert summary["km2_per_cpu_hour_ratio"] > 0
    assert "| skip found | 1 |" in capsys.readouterr().out
