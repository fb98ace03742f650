"""The SD-1.5 timing benchmark runs end to end (tiny model, CPU) and forces every optimisation iteration."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def test_tiny_cpu_smoke(tmp_path: Path, capsys) -> None:
    bench = load_benchmark("edit_sd15")
    out = tmp_path / "bench.json"
    fast = ["lora.steps=2", "lora.batch_size=1", "inversion.num_steps=10", "drag.max_iterations=4"]
    argv = ["--tiny", "--device", "cpu", "--no-warmup", "--out", str(out)]
    for item in fast:
        argv += ["--set", item]
    assert bench.main(argv) == 0
    row = json.loads(out.read_text())
    assert row["iterations"] == 4  # the stop rule is off: every iteration runs
    assert row["config"]["drag"]["stop_distance"] == 0.0 and row["image_size"] == 64
    for key in ("load_s", "lora_s", "inversion_s", "optimisation_s", "denoise_decode_s", "edit_total_s"):
        assert row[key] > 0
    assert row["per_iteration_ms_median"] > 0
    assert "per iteration (median)" in capsys.readouterr().out


def test_sd15_configs_match_the_published_architecture() -> None:
    bench = load_benchmark("edit_sd15")
    assert bench.SD15_UNET["block_out_channels"] == (320, 640, 1280, 1280)
    assert bench.SD15_UNET["cross_attention_dim"] == bench.CLIP_L14_TEXT["hidden_size"] == 768
    assert bench.SD15_VAE["scaling_factor"] == 0.18215
    tok = bench.byte_tokenizer(77)
    ids = tok("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < bench.CLIP_L14_TEXT["vocab_size"]
