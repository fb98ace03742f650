"""DragEditor end to end on the tiny pipeline: real and generated images, determinism, stop, input checks."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_tiny_pipeline
from dragdiff.config import ConfigError, GenerateConfig, preset
from dragdiff.editor import DragEditor
from dragdiff.types import DragInstruction, InputError

FAST = preset("dragdiffusion").override(
    **{
        "lora.steps": 2,
        "lora.batch_size": 1,
        "lora.rank": 4,
        "inversion.num_steps": 10,  # 7 inverted steps, t = 601
        "drag.max_iterations": 3,
    }
)


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> DragEditor:
    return DragEditor(build_tiny_pipeline(), lora_cache_dir=tmp_path_factory.mktemp("lora-cache"))


def _instruction(mask: bool = True) -> DragInstruction:
    m = np.zeros((44, 60), dtype=bool)
    m[8:36, 8:52] = True
    return DragInstruction.from_pairs(
        [((21, 22), (40, 22)), ((10, 10), (12, 30))], mask=m if mask else None, prompt="a cat"
    )


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_real_image_edit_end_to_end(editor: DragEditor, tiny_image) -> None:
    before = _pixels(tiny_image).copy()
    processors = dict(editor.pipe.unet.attn_processors)
    keys = set(editor.pipe.unet.state_dict())
    run = editor.iter_edit(tiny_image, _instruction(), FAST)
    events = list(run)
    result = run.result
    assert result is not None
    phases = [e.phase for e in events]
    assert phases[0] == "lora" and phases[-1] == "done"
    assert phases.index("inversion") < phases.index("drag") < phases.index("denoise")
    assert phases.count("inversion") == phases.count("denoise") == 7
    assert result.image.size == tiny_image.size  # 60x44, not a multiple of 8, in and out
    assert 1 <= result.iterations <= 3 and not result.stopped
    drag_events = [e for e in events if e.phase == "drag"]
    assert all(len(e.handles) == 2 and e.loss is not None for e in drag_events)
    rec = result.record
    assert rec["mode"] == "real" and rec["lora"] and rec["timestep"] == 601
    assert rec["work_size"] == [64, 32] and rec["grid_size"] == [32, 16]
    assert rec["instruction"]["mask"] is True and len(rec["tracked_handles"]["after"]) == 2
    assert {"lora", "inversion", "drag", "denoise", "decode", "total"} <= rec["timings"].keys()
    assert rec["config"]["drag"]["max_iterations"] == 3 and "torch" in rec["package_versions"]
    assert np.array_equal(_pixels(tiny_image), before)  # the input is never modified
    assert set(editor.pipe.unet.state_dict()) == keys  # LoRA unloaded
    assert all(editor.pipe.unet.attn_processors[k] is v for k, v in processors.items())  # control removed


def test_same_inputs_same_output(editor: DragEditor, tiny_image) -> None:
    a = editor.edit(tiny_image, _instruction(), FAST)
    b = editor.edit(tiny_image, _instruction(), FAST)  # the second run reuses the cached LoRA
    assert np.array_equal(_pixels(a.image), _pixels(b.image))
    assert a.final_handles == b.final_handles


def test_stop_flag_ends_optimisation_but_still_returns(editor: DragEditor, tiny_image) -> None:
    stop = threading.Event()
    cfg = FAST.override(**{"lora.enabled": False, "drag.max_iterations": 50, "drag.stop_distance": 0.0})
    run = editor.iter_edit(tiny_image, _instruction(mask=False), cfg, stop)
    for event in run:
        if event.phase == "drag":
            stop.set()
    result = run.result
    assert result is not None and result.stopped and result.iterations == 1
    assert result.record["stopped"] and result.image.size == tiny_image.size


def test_handles_already_at_targets_need_no_iterations(editor: DragEditor, tiny_image) -> None:
    cfg = FAST.override(**{"lora.enabled": False, "runtime.preview_every": 1})
    near = DragInstruction.from_pairs([((30, 20), (31, 20))])  # < 2 grid pixels apart
    result = editor.edit(tiny_image, near, cfg)
    assert result.iterations == 0 and result.record["converged"] and result.frames == []


def test_previews_and_frames(editor: DragEditor, tiny_image) -> None:
    cfg = FAST.override(**{"lora.enabled": False, "runtime.preview_every": 1, "drag.stop_distance": 0.0})
    run = editor.iter_edit(tiny_image, _instruction(mask=False), cfg)
    previews = [e.preview for e in run if e.phase == "drag"]
    assert run.result is not None and len(previews) == 3 and all(p.size == tiny_image.size for p in previews)
    assert len(run.result.frames) == 3


def test_generated_image_mode(editor: DragEditor) -> None:
    gen = editor.generate("a red circle", GenerateConfig(num_steps=10, seed=3))
    assert gen.latents.shape == (11, 4, 16, 16) and gen.image.size == (64, 64)
    assert gen.latents.device.type == "cpu" and gen.timesteps[0] == 901
    again = editor.generate("a red circle", GenerateConfig(num_steps=10, seed=3))
    assert torch.equal(gen.latents, again.latents)
    instruction = DragInstruction.from_pairs([((20, 30), (40, 30))])
    run = editor.iter_edit(gen, instruction, FAST)
    phases = {e.phase for e in run}
    result = run.result
    assert result is not None and "lora" not in phases  # no LoRA, no inversion in generated mode
    assert result.record["mode"] == "generated" and not result.record["lora"]
    assert result.record["timestep"] == gen.timesteps[10 - 7] and result.image.size == (64, 64)
    assert result.record["instruction"]["prompt"] == "a red circle"


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("point_outside", InputError, r"handle 1 at \(70, 5\) is outside the 60x44 image"),
        ("mask_size", InputError, "mask is 10x10"),
        ("mask_values", InputError, "binary"),
        ("prompt", InputError, "prompt must be a string"),
        ("image", InputError, "PIL image"),
        ("config", ConfigError, "EditConfig"),
        ("feature_block", ConfigError, "feature_up_block"),
        ("control_levels", ConfigError, "control_levels"),
    ],
)
def test_bad_inputs_fail_before_any_work(editor: DragEditor, tiny_image, bad: str, error, match: str) -> None:
    image, cfg = tiny_image, FAST
    ins = DragInstruction.from_pairs([((5, 5), (9, 9))])
    if bad == "point_outside":
        ins = DragInstruction.from_pairs([((70, 5), (9, 9))])
    elif bad == "mask_size":
        ins = DragInstruction.from_pairs([((5, 5), (9, 9))], mask=np.ones((10, 10), bool))
    elif bad == "mask_values":
        ins = DragInstruction.from_pairs([((5, 5), (9, 9))], mask=np.full((44, 60), 0.5))
    elif bad == "prompt":
        ins = DragInstruction.from_pairs([((5, 5), (9, 9))], prompt=3)  # type: ignore[arg-type]
    elif bad == "image":
        image = Path("cat.png")
    elif bad == "config":
        cfg = {"drag": {}}
    elif bad == "feature_block":
        cfg = FAST.override(**{"drag.feature_up_block": 4})
    elif bad == "control_levels":
        cfg = FAST.override(**{"denoise.control_levels": 4})
    with pytest.raises(error, match=match):
        editor.iter_edit(image, ins, cfg)


def test_seed_is_the_seed_of_the_lora(editor: DragEditor, tiny_image) -> None:
    """``EditConfig.seed`` seeds the LoRA's draws and keys its cache entry (no second, LoRA-only seed)."""
    cfg = FAST.override(**{"lora.steps": 1})
    before = set(editor.lora_cache._memory)
    for seed in (0, 1):
        list(editor.prepare_lora(tiny_image, "seeded", cfg.override(seed=seed)))
    new = [editor.lora_cache._memory[k] for k in editor.lora_cache._memory if k not in before]
    assert len(new) == 2  # two seeds, two adapters
    assert any(not torch.equal(new[0][k], new[1][k]) for k in new[0])


def test_optimisation_leaves_no_lora_or_unet_gradients(editor: DragEditor, tiny_image) -> None:
    unet = editor.pipe.unet
    checked = 0
    cfg = FAST.override(**{"drag.stop_distance": 0.0, "runtime.fast": False})  # peft's adapter (fast: merged)
    for event in editor.iter_edit(tiny_image, _instruction(), cfg):
        if event.phase == "drag":  # the adapter is installed and the latent has been stepped
            named = dict(unet.named_parameters())
            assert any(".dragdiff_identity." in n for n in named)
            assert [n for n, p in named.items() if p.grad is not None or p.requires_grad] == []
            checked += 1
    assert checked == 3


def test_cached_adapter_that_does_not_fit_is_trained_again(
    editor: DragEditor, tiny_image, monkeypatch: pytest.MonkeyPatch
) -> None:
    bogus = {"down_blocks.9.nothing.lora_A.weight": torch.zeros(4, 4)}
    monkeypatch.setattr(editor.lora_cache, "get", lambda key: bogus)
    cfg = FAST.override(**{"drag.max_iterations": 1, "seed": 7})
    run = editor.iter_edit(tiny_image, _instruction(), cfg)
    lora_events = [e for e in run if e.phase == "lora"]
    assert run.result is not None and run.result.record["lora"]
    assert [e.step for e in lora_events] == [1, 2] and all(e.message != "cached" for e in lora_events)


def test_generated_image_from_another_model_is_refused(editor: DragEditor) -> None:
    import dataclasses

    gen = editor.generate("a red circle", GenerateConfig(num_steps=10, seed=3))
    assert gen.model_id == editor.model_id
    other = dataclasses.replace(gen, model_id="someone/other-model")
    with pytest.raises(InputError, match=r"someone/other-model.*" + editor.model_id):
        editor.iter_edit(other, DragInstruction.from_pairs([((20, 30), (40, 30))]), FAST)


def test_saved_latents_get_a_plain_file_mode_and_leave_no_temp_files(editor: DragEditor, tmp_path) -> None:
    import os

    from dragdiff.diffusion.generate import load_generated, save_generated

    gen = editor.generate("a red circle", GenerateConfig(num_steps=2, seed=3))
    path = save_generated(gen, tmp_path / "g.latents.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["g.latents.safetensors"]
    assert torch.equal(load_generated(path, gen.image).latents, gen.latents)


@pytest.mark.parametrize(
    ("weights", "device", "precision", "want"),
    [
        (torch.float16, "cuda", "auto", None),  # half weights: run natively in their dtype, no autocast
        (torch.bfloat16, "cuda", "auto", None),
        (torch.float32, "cuda", "auto", torch.bfloat16),  # fp32 weights on CUDA: bf16
        (torch.float32, "cpu", "auto", None),
        (torch.float16, "cuda", "fp32", torch.float16),
        (torch.float32, "cuda", "fp16", torch.float16),
    ],
)
def test_autocast_dtype(weights, device: str, precision: str, want) -> None:
    from types import SimpleNamespace

    fake = SimpleNamespace(
        pipe=SimpleNamespace(unet=SimpleNamespace(dtype=weights)), device=torch.device(device)
    )
    cfg = preset("dragdiffusion").override(**{"runtime.precision": precision})
    assert DragEditor._amp(fake, cfg) == want  # type: ignore[arg-type]
