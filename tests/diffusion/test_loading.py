"""load_pipeline: folders, single files, the embedded default, hub ids (offline: fail fast), bad paths."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from dragdiff.diffusion import loading
from dragdiff.diffusion.loading import ModelLoadError, load_pipeline, native_size, size_multiple


def test_folder_loads_with_ddim_and_native_size(tiny_pipeline_dir: Path) -> None:
    pipe = load_pipeline(tiny_pipeline_dir, device="cpu")
    sched = pipe.scheduler
    assert type(sched).__name__ == "DDIMScheduler"
    assert (sched.config.clip_sample, sched.config.set_alpha_to_one, sched.config.steps_offset) == (
        False,
        False,
        1,
    )
    assert sched.config.timestep_spacing == "leading"
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"  # auto dtype on CPU is fp32
    assert native_size(pipe) == 64 and size_multiple(pipe) == 32
    assert pipe.safety_checker is None


def test_single_file_loads_same_weights(tiny_pipeline_dir: Path, tiny_single_file: Path) -> None:
    folder = load_pipeline(tiny_pipeline_dir, device="cpu")
    single = load_pipeline(tiny_single_file, device="cpu", config=tiny_pipeline_dir)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_single_file_without_configs_says_how_to_fix(tiny_single_file: Path, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="--model-config"):
        load_pipeline(tiny_single_file, device="cpu")


def test_separate_vae_folder(tiny_pipeline_dir: Path) -> None:
    pipe = load_pipeline(tiny_pipeline_dir, vae=tiny_pipeline_dir / "vae", device="cpu", dtype="fp32")
    assert pipe.vae.config.scaling_factor == pytest.approx(0.3)


def test_embedded_model_missing_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(loading, "EMBEDDED_MODEL_DIR", tmp_path / "model")
    with pytest.raises(ModelLoadError, match="embedded model not found"):
        load_pipeline(None, device="cpu")


@pytest.mark.parametrize("make", ["empty_dir", "text_file", "missing"])
def test_not_a_pipeline(make: str, tmp_path: Path) -> None:
    path = {
        "empty_dir": tmp_path,
        "text_file": tmp_path / "notes.txt",
        "missing": tmp_path / "nope.safetensors",
    }[make]
    if make == "text_file":
        path.write_text("hello")
    with pytest.raises(ModelLoadError, match=str(path.name)):
        load_pipeline(path, device="cpu")


def test_unreachable_hub_id_fails_fast(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: refused at once
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="local"):
        load_pipeline("someone/some-model", device="cpu")
    assert time.perf_counter() - start < 15


def test_bad_device_and_dtype() -> None:
    with pytest.raises(ModelLoadError, match="dtype"):
        loading.resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="device"):
        loading.resolve_device("tpu9")
