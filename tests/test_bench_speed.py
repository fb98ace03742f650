"""benchmarks/speed.py (faithful vs fast path in one process) runs end to end on the tiny model on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("speed", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_smoke(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts benchmarks/ on the path
    bench = _load()
    out = tmp_path / "speed.json"
    short = ["lora.steps=2", "lora.batch_size=1", "inversion.num_steps=6", "drag.max_iterations=3"]
    argv = ["--tiny", "--device", "cpu", "--out", str(out)]
    for item in short:
        argv += ["--set", item]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert len(runs) == 6 and all(r["iterations"] == 3 for r in runs.values())  # stop rule off
    repeat = runs["fast repeat drag (LoRA + z_t cached)"]
    assert repeat["lora_s"] < runs["fast (warm)"]["lora_s"] and repeat["inversion_s"] < 0.1
    eq = report["fast_vs_faithful"]
    assert eq["max_handle_diff_grid_px"] is not None and eq["max_handle_diff_grid_px"] <= 1.0
    assert report["device_name"] == "cpu" and report["configs"]["faithful"]["runtime"]["fast"] is False
    assert "| faithful (warm) |" in capsys.readouterr().out
