"""Model families (issue #19): detection from configs and file names, loading each family, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_family_pipeline, save_ldm_single_file
from dragdiff.diffusion.family import (
    SD1,
    SD2,
    SDXL,
    SUPPORTED,
    UnsupportedModelError,
    family_from_unet_config,
    family_of,
    family_of_file_keys,
)
from dragdiff.diffusion.loading import ModelLoadError, load_pipeline, native_size
from dragdiff.diffusion.unet import text_conditioning, unet_eps


@pytest.mark.parametrize(
    ("name", "family", "prediction", "native"),
    [("sd2-eps", SD2, "epsilon", 64), ("sd2-v", SD2, "v_prediction", 96), ("sdxl", SDXL, "epsilon", 64)],
)
def test_folder_loads_as_its_family(tiny_family_dirs, name, family, prediction, native) -> None:
    pipe = load_pipeline(tiny_family_dirs[name], device="cpu")
    assert family_of(pipe) is family
    assert type(pipe).__name__ == family.pipeline_class
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.prediction_type == prediction  # kept through the DDIM replacement
    assert native_size(pipe) == native


def test_sd1_folder_is_sd1(tiny_pipeline_dir: Path) -> None:
    assert family_of(load_pipeline(tiny_pipeline_dir, device="cpu")) is SD1


def test_unet_config_rules() -> None:
    assert family_from_unet_config({"addition_embed_type": "text_time"}) is SDXL
    assert family_from_unet_config({"cross_attention_dim": 1024}) is SD2
    assert family_from_unet_config({"cross_attention_dim": 768, "use_linear_projection": True}) is SD2
    assert family_from_unet_config({"cross_attention_dim": 768}) is SD1


def test_supervision_grid_per_family() -> None:
    assert SD1.supervision_scale(512) == 0.5 and SD1.supervision_scale(128) == 0.5  # the reference's rule
    assert SD2.supervision_scale(512) == 0.5 and SD2.supervision_scale(768) == pytest.approx(1 / 3)
    assert SDXL.supervision_scale(1024) == 0.25  # a 256-px grid, as the reference's at 512
    assert (SD1.feature_up_block, SD2.feature_up_block, SDXL.feature_up_block) == (2, 2, 1)


def _fake_folder(root: Path, index: dict, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize(
    ("index", "named"),
    [
        (
            {
                "_class_name": "StableDiffusion3Pipeline",
                "transformer": ["diffusers", "SD3Transformer2DModel"],
            },
            "SD3",
        ),
        ({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, "FLUX"),
        ({"_class_name": "SomePipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, "FLUX"),
        ({"_class_name": "KandinskyV22Pipeline", "unet": ["diffusers", "UNet2DConditionModel"]}, "Kandinsky"),
        (
            {
                "_class_name": "StableDiffusionXLImg2ImgPipeline",
                "text_encoder": [None, None],
                "requires_aesthetics_score": True,
            },
            "SDXL refiner",
        ),
        (
            {"_class_name": "PixArtSigmaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]},
            "PixArt",
        ),
    ],
)
def test_unsupported_folders_fail_with_one_line(tmp_path: Path, index: dict, named: str) -> None:
    folder = _fake_folder(tmp_path, index, "model")
    with pytest.raises(UnsupportedModelError) as info:
        load_pipeline(folder, device="cpu")
    message = str(info.value)
    assert "\n" not in message and named in message and SUPPORTED in message


def test_unsupported_via_cli_is_one_line(tmp_path: Path, capsys) -> None:
    from dragdiff.cli import main

    folder = _fake_folder(
        tmp_path, {"_class_name": "FluxPipeline", "transformer": ["diffusers", "X"]}, "flux"
    )
    image = tmp_path / "in.png"
    from conftest import make_test_image

    make_test_image().save(image)
    code = main(
        ["edit", str(image), "--drag", "10,10:20,10", "--model", str(folder), "-o", str(tmp_path / "o.png")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "FLUX" in err[0] and "SDXL" in err[0] and "SD-2.x" in err[0]


def test_file_keys() -> None:
    assert family_of_file_keys(["conditioner.embedders.0.transformer.x"], "f") is SDXL
    assert family_of_file_keys(["model.diffusion_model.label_emb.0.0.weight"], "f") is SDXL
    assert family_of_file_keys(["cond_stage_model.model.transformer.resblocks.0.x"], "f") is SD2
    assert family_of_file_keys(["cond_stage_model.transformer.text_model.x"], "f") is SD1
    assert family_of_file_keys(["model.diffusion_model.input_blocks.0.0.weight"], "f") is None
    for key, named in (
        ("model.diffusion_model.joint_blocks.0.x", "SD3"),
        ("double_blocks.0.img_attn.x", "FLUX"),
    ):
        with pytest.raises(UnsupportedModelError, match=named):
            family_of_file_keys([key], "f")


def test_unsupported_single_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "sd3.safetensors"
    save_file({"model.diffusion_model.joint_blocks.0.x.weight": torch.zeros(1)}, str(path))
    with pytest.raises(UnsupportedModelError, match="SD3 models are not supported"):
        load_pipeline(path, device="cpu")


@pytest.mark.parametrize("name", ["sd2-v", "sdxl"])
def test_single_file_loads_with_its_config(tiny_family_dirs, name: str, tmp_path: Path) -> None:
    folder = load_pipeline(tiny_family_dirs[name], device="cpu")
    path = save_ldm_single_file(folder, tmp_path / f"{name}.safetensors")
    single = load_pipeline(path, device="cpu", config=tiny_family_dirs[name])
    assert family_of(single) is family_of(folder)
    parts = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if name == "sdxl" else ())
    for part in parts:
        a, b = getattr(folder, part).state_dict(), getattr(single, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_sdxl_single_file_without_config_says_how_to_fix(tiny_family_dirs, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    pipe = load_pipeline(tiny_family_dirs["sdxl"], device="cpu")
    path = save_ldm_single_file(pipe, tmp_path / "xl.safetensors")
    with pytest.raises(
        ModelLoadError, match="SDXL checkpoint needs its model configs.*--model-config"
    ) as info:
        load_pipeline(path, device="cpu")
    assert "\n" not in str(info.value)


def test_single_file_config_of_another_family(tiny_family_dirs, tmp_path: Path) -> None:
    pipe = load_pipeline(tiny_family_dirs["sdxl"], device="cpu")
    path = save_ldm_single_file(pipe, tmp_path / "xl.safetensors")
    with pytest.raises(ModelLoadError, match="SDXL checkpoint but --model-config"):
        load_pipeline(path, device="cpu", config=tiny_family_dirs["sd2-eps"])


def test_sdxl_conditioning_matches_diffusers(tiny_family_dirs) -> None:
    """The UNet call with our conditioning equals the one StableDiffusionXLPipeline makes (CFG included; our
    empty negative prompt is diffusers' "no negative prompt": zeros, by ``force_zeros_for_empty_prompt``)."""
    pipe = load_pipeline(tiny_family_dirs["sdxl"], device="cpu")
    cond = text_conditioning(pipe, "a red cat", (64, 64), negative="", guidance=3.0)
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        "a red cat",
        device="cpu",
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=None,
    )
    assert not neg.any()  # the tiny pipeline says force_zeros_for_empty_prompt, as SDXL base does
    ids = pipe._get_add_time_ids(
        (64, 64),
        (0, 0),
        (64, 64),
        dtype=embeds.dtype,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    )
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = unet_eps(pipe.unet, z, 501, cond)
    with torch.no_grad():
        out = pipe.unet(
            torch.cat([z, z]),
            501,
            torch.cat([neg, embeds]),
            added_cond_kwargs={
                "text_embeds": torch.cat([neg_pooled, pooled]),
                "time_ids": torch.cat([ids, ids]),
            },
        ).sample
    u, c = out.chunk(2)
    torch.testing.assert_close(ours, u + 3.0 * (c - u))


def test_v_prediction_inversion_round_trip(tiny_family_dirs) -> None:
    """DDIM inversion then denoising with the v-prediction model returns the start (η = 0 is invertible)."""
    from dragdiff.diffusion.inversion import denoise_timesteps, invert

    pipe = load_pipeline(tiny_family_dirs["sd2-v"], device="cpu")
    cond = text_conditioning(pipe, "", (96, 96))
    z0 = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(1)) * 0.5

    def eps(z, t):
        return unet_eps(pipe.unet, z, t, cond)

    inversion, _ = invert(pipe.scheduler, z0, eps, 50, 5)
    z = inversion.latents
    with torch.no_grad():
        for t in denoise_timesteps(pipe.scheduler, 50, 5):
            z = pipe.scheduler.step(eps(z, t), t, z).prev_sample
    assert (z - z0).abs().max() < 0.05 * z0.abs().max()


def test_sdxl_lora_is_in_sdxl_diffusers_format(tiny_family_dirs, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    from dragdiff.config import LoraConfig
    from dragdiff.diffusion.lora import WEIGHT_NAME, LoraCache, adapter_state, lora_adapter

    pipe = load_pipeline(tiny_family_dirs["sdxl"], device="cpu")
    cfg = LoraConfig(rank=2)
    with lora_adapter(pipe.unet, cfg):
        state = adapter_state(pipe.unet)
    cache = LoraCache(tmp_path, pipeline_class=family_of(pipe).pipeline_class)
    cache.put("k", state, cfg)
    assert (tmp_path / "k" / WEIGHT_NAME).is_file()
    fresh = StableDiffusionXLPipeline.from_pretrained(tiny_family_dirs["sdxl"])
    fresh.load_lora_weights(tmp_path / "k", weight_name=WEIGHT_NAME)  # diffusers' own loader reads it
    assert any("lora" in n for n, _ in fresh.unet.named_parameters())


def test_ready_sdxl_pipeline_object_is_accepted() -> None:
    from dragdiff.editor import DragEditor

    editor = DragEditor(build_tiny_family_pipeline("sdxl"), device="cpu")
    assert (
        editor.family is SDXL
        and editor.for_model(__import__("dragdiff.config").config.EditConfig()).drag.feature_up_block == 1
    )


def test_hub_id_in_the_local_cache_loads_as_its_family(tiny_family_dirs, tmp_path: Path, monkeypatch) -> None:
    """A hub id whose snapshot is in the Hugging Face cache: family from its model_index.json, no network."""
    import shutil

    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-sdxl"
    shutil.copytree(tiny_family_dirs["sdxl"], repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at call time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline("someone/tiny-sdxl", device="cpu")
    assert family_of(pipe) is SDXL and type(pipe).__name__ == "StableDiffusionXLPipeline"
