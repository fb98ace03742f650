"""The family benchmark (issue #19) runs on tiny models on the CPU; its configs are the published sizes."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def test_tiny_cpu_smoke(tmp_path: Path, capsys) -> None:
    bench = load_benchmark("family_speed")
    out = tmp_path / "family.json"
    argv = ["--tiny", "--device", "cpu", "--no-warmup", "--models", "sdxl", "--methods", "warp,dragdiffusion"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["method"], r["status"]) for r in rows] == [
        ("sdxl", "warp", "ok"),
        ("sdxl", "dragdiffusion", "ok"),
    ]
    assert rows[1]["iterations"] == 3 and rows[0]["family"] == "sdxl" and rows[1]["total_s"] > 0
    assert "peak GiB" in capsys.readouterr().out


def test_configs_are_the_published_architectures() -> None:
    import torch
    from diffusers import UNet2DConditionModel

    bench = load_benchmark("family_speed")
    with torch.device("meta"):
        sdxl = UNet2DConditionModel(**bench.SDXL_UNET)
        sd21 = UNet2DConditionModel(**bench.SD21_UNET)
    assert round(sum(p.numel() for p in sdxl.parameters()) / 1e6) == 2567  # SDXL base 1.0: 2.57 B
    assert round(sum(p.numel() for p in sd21.parameters()) / 1e6) == 866  # SD-2.1: 866 M
    assert bench.SDXL_UNET["cross_attention_dim"] == 768 + 1280  # CLIP-L ‖ OpenCLIP-bigG
    assert bench.MODELS["sd2-768-v"]["prediction"] == "v_prediction"
