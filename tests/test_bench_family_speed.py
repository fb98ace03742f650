"""The family benchmark (issue #19) runs on tiny models on the CPU; its configs are the published sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "family_speed.py"


def _load():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("family_speed", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_smoke(tmp_path: Path, capsys) -> None:
    bench = _load()
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

    bench = _load()
    with torch.device("meta"):
        sdxl = UNet2DConditionModel(**bench.SDXL_UNET)
        sd21 = UNet2DConditionModel(**bench.SD21_UNET)
    assert round(sum(p.numel() for p in sdxl.parameters()) / 1e6) == 2567  # SDXL base 1.0: 2.57 B
    assert round(sum(p.numel() for p in sd21.parameters()) / 1e6) == 866  # SD-2.1: 866 M
    assert bench.SDXL_UNET["cross_attention_dim"] == 768 + 1280  # CLIP-L ‖ OpenCLIP-bigG
    assert bench.MODELS["sd2-768-v"]["prediction"] == "v_prediction"
