"""benchmarks/demo_drags.py: its "where did the object go" measure; an end-to-end run on the tiny model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from PIL import Image

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_colour_mass_reads_the_exact_move_of_the_bundled_star() -> None:
    bench = load_benchmark("demo_drags")
    x0, a0 = bench.colour_mass(Image.open(ROOT / "examples" / "sample.png"), "sample.png")
    x1, a1 = bench.colour_mass(Image.open(ROOT / "examples" / "sample_moved.png"), "sample.png")
    assert abs((x1 - x0) - 20) < 0.5 and a1 == a0  # the ground truth moves the star 20 px, whole
    blank = Image.new("RGB", (128, 128), "white")
    x, area = bench.colour_mass(blank, "sample.png")
    assert math.isnan(x) and area == 0  # no star, no centroid


def test_tiny_cpu_run_writes_table_picture_and_records(
    tmp_path: Path, tiny_pipeline_dir: Path, monkeypatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    bench = load_benchmark("demo_drags")
    short = ["lora.steps=1", "lora.batch_size=1", "inversion.num_steps=4", "drag.max_iterations=2"]
    argv = ["--out", str(tmp_path), "--models", str(tiny_pipeline_dir), "--device", "cpu"]
    argv += ["--instructions", "star 5 tips +20", "emoji centre +30"]
    for item in short:
        argv += ["--set", item]
    bench.main(argv)
    records = json.loads((tmp_path / "demo_drags.json").read_text())
    assert [r["instruction"] for r in records] == ["star 5 tips +20", "emoji centre +30"]
    assert len(records[0]["handles_after"]) == 5 and records[0]["iterations"] == 2
    assert all(math.isfinite(r["object_shift"]) for r in records)
    with Image.open(tmp_path / "demo_drags.png") as sheet:
        assert sheet.width >= 2 * 160  # one column per instruction
