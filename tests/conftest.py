"""Shared fixtures: tiny random Stable-Diffusion-1.x pipelines built in code (no downloads).

The pipeline has the SD-1.x block topology (3 cross-attention down blocks + a plain one, a cross-attention
mid block, a plain up block + 3 cross-attention up blocks) at toy widths, a 4-latent-channel VAE with f = 4, a
tiny CLIP text encoder, an offline byte-level CLIP tokenizer, and the SD-1.5 DDIM scheduler. Native size:
``unet.sample_size (16) * vae_scale_factor (4) = 64`` px; the UNet needs sides that are multiples of 32 px.

Fixtures (session-scoped ones are built once and saved once):
- ``tiny_pipeline_dir``: a diffusers folder; load it with ``StableDiffusionPipeline.from_pretrained(dir)``.
- ``tiny_single_file``: the same weights as one original-layout (LDM) ``.safetensors`` file; load offline:
  ``StableDiffusionPipeline.from_single_file(path, config=str(tiny_pipeline_dir), local_files_only=True)``.
- ``tiny_pipeline``: a fresh fp32 CPU pipeline loaded from the folder (function-scoped: safe to mutate).
- ``tiny_image``: a deterministic 60x44 RGB test picture (not a multiple of 8 on purpose).
- ``tiny_family_dirs``: tiny SD-2.x (ε; v-prediction at 96 px) and SDXL folders (``TINY_FAMILIES``), built by
  ``build_tiny_family_pipeline(family, prediction_type)`` (issue #19).

``build_tiny_pipeline(seed)`` is importable (``from conftest import build_tiny_pipeline``) if a test needs one
in memory. The text encoder and tokenizer use ``model_max_length = 16`` (not 77): code hard-coding 77 fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY_MAX_LENGTH = 16  # tokenizer.model_max_length / max_position_embeddings of the tiny text encoder
TINY_WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "blue", "circle", "square", "on", "background")


def build_tiny_tokenizer():  # -> transformers.CLIPTokenizer
    """A CLIP tokenizer: the 512 byte tokens, merges spelling ``TINY_WORDS``, the two special tokens."""
    from transformers import CLIPTokenizer

    from dragdiff.model.tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:  # merge left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>"
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if (pieces[0], pieces[1]) not in merges:
                merges.append((pieces[0], pieces[1]))
                vocab_list.append(merged)
            pieces = [merged] + pieces[2:]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TINY_MAX_LENGTH)


def build_tiny_pipeline(seed: int = 0):  # -> diffusers.StableDiffusionPipeline
    """Random-weight SD-1.x-topology pipeline, fp32 on CPU, deterministic for a given seed."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from dragdiff.model.arch import build_scheduler

    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=2,  # SD-1.x's config calls the head count "attention_head_dim"
        )
        vae = _tiny_vae()
        text_encoder = _tiny_text_encoder(tokenizer)
    scheduler = build_scheduler()  # SD-1.5's scheduler settings (SPEC §3), as in the embedded model
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_text_encoder(tokenizer, act: str = "quick_gelu", projection: bool = False, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=TINY_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
        hidden_act=act,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.3,
    )


def build_tiny_family_pipeline(family: str, prediction_type: str = "epsilon", seed: int = 0, sample_size=16):
    """A random-weight pipeline of ``family`` ("sd1", "sd2", "sdxl") at toy widths, fp32 on CPU.

    sd2: SD-1.x's topology with SD-2.x's linear attention projections and a GELU (OpenCLIP-like) text
    encoder;
    sdxl: SDXL's topology (a plain first level, cross-attention at the two lower ones, transformer depth
    growing with depth, ``text_time`` added embedding) with two text encoders, the second with a projection
    (pooled embeddings). ``prediction_type`` goes into the scheduler config ("v_prediction" for SD-2.x 768);
    ``sample_size`` x 4 is the native size (16: 64 px; 24: 96 px, the tiny stand-in for SD-2.x's 768).
    """
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from dragdiff.model.arch import build_scheduler

    if family == "sd1" and prediction_type == "epsilon" and sample_size == 16:
        return build_tiny_pipeline(seed)
    scheduler = DDIMScheduler.from_config(build_scheduler().config, prediction_type=prediction_type)
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "sdxl":
            unet = UNet2DConditionModel(
                sample_size=sample_size,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                block_out_channels=(16, 32, 32),
                layers_per_block=1,
                transformer_layers_per_block=(1, 1, 2),
                norm_num_groups=8,
                cross_attention_dim=80,  # the two encoders' 32 + 48 (widths differ, as SDXL's 768 and 1280)
                attention_head_dim=(2, 4, 4),
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=8 * 6 + 32,  # 6 time ids x 8 + pooled 32
            )
            text_encoder = _tiny_text_encoder(tokenizer)
            text_encoder_2 = _tiny_text_encoder(tokenizer, act="gelu", projection=True, hidden=48)
            vae = _tiny_vae()
            pipe = StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=text_encoder,
                text_encoder_2=text_encoder_2,
                tokenizer=tokenizer,
                tokenizer_2=build_tiny_tokenizer(),
                unet=unet,
                scheduler=scheduler,
            )
        else:
            unet = UNet2DConditionModel(
                sample_size=sample_size,
                in_channels=4,
                out_channels=4,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                block_out_channels=(16, 16, 32, 32),
                layers_per_block=1,
                norm_num_groups=8,
                cross_attention_dim=32,
                attention_head_dim=2,
                use_linear_projection=family == "sd2",
            )
            text_encoder = _tiny_text_encoder(tokenizer, act="gelu" if family == "sd2" else "quick_gelu")
            pipe = StableDiffusionPipeline(
                vae=_tiny_vae(),
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# one saved folder per tiny family variant: name -> (family, prediction type, UNet sample size)
TINY_FAMILIES: dict[str, tuple[str, str, int]] = {
    "sd2-eps": ("sd2", "epsilon", 16),
    "sd2-v": ("sd2", "v_prediction", 24),
    "sdxl": ("sdxl", "epsilon", 16),
}


# --- original (LDM / CompVis) single-file layout ------------------------------------------------------------


def _ldm_unet_names(
    layers_per_block: int, levels: int, up_attention: tuple[bool, ...] | None = None
) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs for an SD-1.x/2.x/SDXL UNet, longest prefixes first.

    ``up_attention[i]``: whether up level i has attention (SD-1.x: all but the first; SDXL: all but the last).
    """
    n = layers_per_block
    up_attention = up_attention or tuple(i > 0 for i in range(levels))
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),  # SDXL's pooled-text + time-ids embedding
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(levels):
        for j in range(n):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.1."))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(n + 1) * (i + 1)}.0.op."))
        for j in range(n + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(n + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(n + 1) * i + j}.1."))
        up_slot = 2 if up_attention[i] else 1  # the upsampler follows the resnet (and the attention)
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(n + 1) * i + n}.{up_slot}."))
    return pairs


_LDM_RESNET = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
]


def _to_ldm_unet(
    state: dict[str, torch.Tensor],
    layers_per_block: int,
    levels: int,
    up_attention: tuple[bool, ...] | None = None,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    names = _ldm_unet_names(layers_per_block, levels, up_attention)
    for key, value in state.items():
        new = key
        for dif, ldm in names:
            if key.startswith(dif):
                rest = key[len(dif) :]
                if ".resnets." in dif:
                    for a, b in _LDM_RESNET:
                        rest = b + rest[len(a) :] if rest.startswith(a) else rest
                new = ldm + rest
                break
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _to_ldm_vae(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    for key, value in state.items():
        new = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        for i in range(levels):
            new = new.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            new = new.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            new = new.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")
            new = new.replace(
                f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."
            )
        for j in range(2):
            new = new.replace(f"mid_block.resnets.{j}.", f"mid.block_{j + 1}.")
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for a, b in attn.items():
                new = new.replace(f"attn_1.{a}", f"attn_1.{b}")
            if value.ndim == 2:  # LDM stores the VAE attention projections as 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def _hf_clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' CLIP state dict with the ``text_model.`` prefix (CLIPTextModel >= 5.6 has none)."""
    return {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in state.items()
    }


_OPEN_CLIP_NAMES = [
    ("text_model.encoder.layers.", "transformer.resblocks."),
    (".self_attn.out_proj.", ".attn.out_proj."),
    (".layer_norm1.", ".ln_1."),
    (".layer_norm2.", ".ln_2."),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
]


def _to_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text encoder in OpenCLIP's layout (SD-2.x, SDXL's second encoder): q/k/v fused
    into ``in_proj``, the projection transposed (inverse of diffusers' ``convert_open_clip_checkpoint``)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in _hf_clip_keys(state).items():
        if key.endswith("position_ids"):
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
            continue
        for qkv in ("q", "k", "v"):
            part = f".self_attn.{qkv}_proj."
            if part in key:
                layer, kind = key.split(part)
                fused.setdefault(f"{layer}|{kind}", {})[qkv] = value
                break
        else:
            for a, b in _OPEN_CLIP_NAMES:
                key = key.replace(a, b)
            out[prefix + key] = value
    for name, parts in fused.items():
        layer, kind = name.split("|")
        for a, b in _OPEN_CLIP_NAMES[:1]:
            layer = layer.replace(a, b)
        out[f"{prefix}{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def save_ldm_single_file(pipe, path: Path, text_encoder: bool = True) -> Path:
    """Write ``pipe``'s UNet, VAE and text encoder(s) as one original-layout ``.safetensors`` checkpoint.

    Text encoders in the original layouts: SD-1.x ``cond_stage_model.transformer`` (CLIP), SD-2.x
    ``cond_stage_model.model`` (OpenCLIP), SDXL ``conditioner.embedders.0.transformer`` (CLIP) and
    ``conditioner.embedders.1.model`` (OpenCLIP). ``text_encoder=False`` leaves them out.
    """
    from safetensors.torch import save_file

    from dragdiff.diffusion.family import family_of

    unet_cfg = pipe.unet.config
    up_attention = tuple("CrossAttn" in t for t in unet_cfg.up_block_types)
    state: dict[str, torch.Tensor] = {}
    state.update(
        _to_ldm_unet(
            pipe.unet.state_dict(), unet_cfg.layers_per_block, len(unet_cfg.block_out_channels), up_attention
        )
    )
    state.update(_to_ldm_vae(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    family = family_of(pipe).name
    if text_encoder and family == "sd1":
        for key, value in _hf_clip_keys(pipe.text_encoder.state_dict()).items():
            state["cond_stage_model.transformer." + key] = value
    elif text_encoder and family == "sd2":
        state.update(_to_open_clip(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    elif text_encoder:  # sdxl
        for key, value in _hf_clip_keys(pipe.text_encoder.state_dict()).items():
            state["conditioner.embedders.0.transformer." + key] = value
        state.update(_to_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# --- session set-up ----------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process (override with DRAGDIFF_TEST_THREADS=N).

    On a busy 2-core machine, OpenMP's spinning worker threads made tiny-model tests 30-60x slower than a
    single thread (measured: an edit took 98 s with 2 threads against 1.6 s with one).
    """
    import os

    torch.set_num_threads(int(os.environ.get("DRAGDIFF_TEST_THREADS", "1")))


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny SD-1.x pipeline (diffusers folder layout, fp32 safetensors)."""
    path = tmp_path_factory.mktemp("tiny-sd") / "pipeline"
    build_tiny_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_single_file(tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny weights as one original-layout ``.safetensors`` file (configs: tiny_pipeline_dir)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    return save_ldm_single_file(pipe, tmp_path_factory.mktemp("tiny-sd-file") / "tiny-sd.safetensors")


@pytest.fixture(scope="session")
def tiny_family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny SD-2.x (ε, v-prediction at 96 px) and SDXL pipelines: ``TINY_FAMILIES`` name -> folder."""
    root = tmp_path_factory.mktemp("tiny-families")
    dirs = {}
    for name, (family, prediction, size) in TINY_FAMILIES.items():
        build_tiny_family_pipeline(family, prediction, sample_size=size).save_pretrained(root / name)
        dirs[name] = root / name
    return dirs


@pytest.fixture
def tiny_pipeline(tiny_pipeline_dir: Path) -> Iterator:
    """A fresh fp32 CPU copy of the tiny pipeline (function-scoped, so tests may add adapters etc.)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    yield pipe


def make_test_image(width: int = 60, height: int = 44) -> Image.Image:
    """A deterministic picture: a gradient background with a bright disc left of centre."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), 0.5 + 0 * xx], axis=-1)
    disc = (xx - width * 0.35) ** 2 + (yy - height * 0.5) ** 2 < (min(width, height) * 0.2) ** 2
    rgb[disc] = (1.0, 0.9, 0.2)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


@pytest.fixture
def tiny_image() -> Image.Image:
    return make_test_image()


def load_benchmark(name: str):
    """``benchmarks/NAME.py`` as a module (benchmarks are scripts, not a package; they import each other)."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
