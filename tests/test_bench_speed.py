"""benchmarks/speed.py (faithful vs fast path in one process) runs end to end on the tiny model on CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_tiny_cpu_smoke(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on the path
    bench = load_benchmark("speed")
    out = tmp_path / "speed.json"
    short = ["lora.steps=2", "lora.batch_size=1", "inversion.num_steps=6", "drag.max_iterations=3"]
    argv = ["--tiny", "--device", "cpu", "--out", str(out)]
    for item in short:
        argv += ["--set", item]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert len(runs) == 7 and all(r["iterations"] == 3 for r in runs.values())  # stop rule off
    repeat = runs["default: repeat drag (LoRA + z_t cached)"]
    graphs = runs["fast + CUDA graphs = default (warm)"]
    assert repeat["lora_s"] < graphs["lora_s"] and repeat["inversion_s"] < 0.1
    eq = report["fast_vs_faithful"]
    assert eq["max_handle_diff_grid_px"] is not None and eq["max_handle_diff_grid_px"] <= 1.0
    same = report["graphs_vs_fast"]  # on a CPU the setting changes nothing: the same edit
    assert same["max_handle_diff_grid_px"] == 0.0 and same["psnr_db"] == float("inf")
    assert report["device_name"] == "cpu" and report["configs"]["faithful"]["runtime"]["fast"] is False
    assert "| faithful (warm) |" in capsys.readouterr().out
    assert report["complete"] is True and report["deterministic"] == {"enabled": False}


def test_only_some_rows_and_a_cut_run_leaves_the_rows_done(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    bench = load_benchmark("speed")
    out = tmp_path / "speed.json"
    argv = ["--tiny", "--device", "cpu", "--out", str(out), "--only", "repeat", "--deterministic"]
    for item in ["lora.steps=1", "lora.batch_size=1", "inversion.num_steps=4", "drag.max_iterations=2"]:
        argv += ["--set", item]
    timed, calls = bench.timed, []

    def cut_after_one(*args, **kwargs):  # the second row "times out"
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return timed(*args, **kwargs)

    monkeypatch.setattr(bench, "timed", cut_after_one)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    cut = json.loads(out.read_text())
    graphs = "fast + CUDA graphs = default (warm)"
    assert cut["complete"] is False and list(cut["runs"]) == [graphs]  # the row done so far
    assert cut["rows_selected"] == ["graphs", "repeat"]  # repeat needs the default row's caches: added
    assert cut["deterministic"]["enabled"] is True and f"| {graphs} |" in cut["table_md"]
    monkeypatch.setattr(bench, "timed", timed)
    assert bench.main(argv) == 0
    whole = json.loads(out.read_text())
    assert whole["complete"] is True and len(whole["runs"]) == 2 and "fast_vs_faithful" not in whole
    with pytest.raises(SystemExit, match="unknown row"):
        bench.main(["--only", "fastest"])
