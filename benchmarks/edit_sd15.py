"""Time one DragDiffusion edit per phase on an SD-1.5-architecture pipeline with random weights.

Compute cost does not depend on weight values, so the published SD-1.5 configs (written out below) with
random weights time a real 512x512 edit without any download. The ``dragdiffusion`` preset runs exactly as in
an edit, except that the stop rule is off (``drag.stop_distance=0``): random weights never bring the handles
to the targets, and a benchmark must run the full 80 iterations every time.

    python benchmarks/edit_sd15.py --out results.json                 # GPU: fp16 weights, one warm-up edit
    python benchmarks/edit_sd15.py --tiny --device cpu --out s.json   # smoke test on a tiny model

Prints a table (model build, LoRA, inversion, optimisation total and per iteration, denoise + decode, total,
peak GPU memory) and writes the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dragdiff.config import EditConfig, parse_override, preset
from dragdiff.editor import DragEditor
from dragdiff.io import atomic_write_json, package_versions
from dragdiff.types import DragInstruction

log = logging.getLogger("edit_sd15")

# Published SD-1.5 (CompVis/runwayml v1-5) component configs.
SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)
SD15_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
    scaling_factor=0.18215,
)
CLIP_L14_TEXT: dict[str, Any] = dict(  # openai/clip-vit-large-patch14 text tower
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD15_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)

# A tiny model of the same topology for the CPU smoke test (64 px images).
TINY_UNET = {
    **SD15_UNET,
    "sample_size": 16,
    "block_out_channels": (16, 16, 32, 32),
    "layers_per_block": 1,
    "attention_head_dim": 2,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}
TINY_VAE = {
    **SD15_VAE,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (8, 16, 16),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
}
TINY_TEXT = {
    **CLIP_L14_TEXT,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": 32,
}


def byte_tokenizer(max_length: int) -> Any:
    """An offline CLIP tokenizer over the 512 byte-level symbols (ids < 514, well inside CLIP's 49408)."""
    from transformers import CLIPTokenizer

    from dragdiff.model.tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length)


def build_pipeline(tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """A StableDiffusionPipeline with random weights, created directly on ``device``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_tokenizer(77)
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with device:
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE))
        text = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else CLIP_L14_TEXT), **ids))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe.to(device=device, dtype=dtype)


def test_picture(size: int) -> tuple[Image.Image, DragInstruction]:
    """A gradient with a bright disc, one drag of the disc to the right, and a mask around it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    rgb = np.stack([xx, yy, 0.5 + 0 * xx], axis=-1)
    disc = (xx - 0.35) ** 2 + (yy - 0.5) ** 2 < 0.12**2
    rgb[disc] = (1.0, 0.85, 0.2)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    mask = np.zeros((size, size), dtype=bool)
    mask[size // 5 : size * 4 // 5, size // 8 : size * 7 // 8] = True
    s = size / 512
    pairs = [((180 * s, 256 * s), (300 * s, 256 * s))]
    return image, DragInstruction.from_pairs(pairs, mask=mask, prompt="a yellow disc on a gradient")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_edit(
    editor: DragEditor, image: Image.Image, instruction: DragInstruction, config: EditConfig
) -> dict:
    """Run one edit; returns phase timings, per-iteration times and peak GPU memory."""
    device = editor.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stamps: list[float] = []
    sync(device)
    run = editor.iter_edit(image, instruction, config)
    for event in run:
        if event.phase == "drag":
            stamps.append(time.perf_counter())  # the loss is read back each iteration: a sync point
    result = run.result
    assert result is not None
    t = result.timings
    per_iter = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "lora_s": t["lora"],
        "inversion_s": t["inversion"],
        "optimisation_s": t["drag"],
        "iterations": result.iterations,
        "per_iteration_ms_median": 1000 * statistics.median(per_iter) if per_iter else None,
        "per_iteration_ms_mean": 1000 * t["drag"] / max(result.iterations, 1),
        "denoise_decode_s": t["denoise"] + t["decode"],
        "prepare_s": t["prepare"],
        "edit_total_s": t["total"],
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def benchmark_config(overrides: list[str], keep_stop_rule: bool) -> EditConfig:
    config = preset("dragdiffusion")
    if not keep_stop_rule:
        config = config.override(**{"drag.stop_distance": 0.0})  # exactly max_iterations iterations
    for text in overrides:
        key, value = parse_override(text, config)
        config = config.override(**{key: value})
    return config


def print_table(row: dict) -> None:
    order = [
        ("model build + editor init", "load_s", "s"),
        ("identity LoRA", "lora_s", "s"),
        ("DDIM inversion", "inversion_s", "s"),
        ("latent optimisation", "optimisation_s", "s"),
        ("  iterations", "iterations", ""),
        ("  per iteration (median)", "per_iteration_ms_median", "ms"),
        ("  per iteration (mean)", "per_iteration_ms_mean", "ms"),
        ("denoise + decode", "denoise_decode_s", "s"),
        ("edit total", "edit_total_s", "s"),
        ("peak GPU memory", "peak_gpu_mem_gb", "GiB"),
    ]
    print(f"\n{row['device_name']} | {row['image_size']}x{row['image_size']} | weights {row['dtype']}")
    print(f"{'phase':<28}{'value':>12}")
    for label, key, unit in order:
        value = row.get(key)
        shown = "-" if value is None else (f"{value:d}" if isinstance(value, int) else f"{value:.3f}")
        print(f"{label:<28}{shown:>12} {unit}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model of the same topology (64 px)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("fp32", "fp16", "bf16"),
        help="weights dtype (default: fp16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        help="config override, as for `dragdiff edit --set`",
    )
    parser.add_argument("--keep-stop-rule", action="store_true", help="do not force all iterations")
    parser.add_argument("--no-warmup", action="store_true", help="skip the short warm-up edit")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype = dtypes[args.dtype] if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    config = benchmark_config(args.overrides, args.keep_stop_rule)
    size = 64 if args.tiny else 512

    start = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, dtype)
    with tempfile.TemporaryDirectory() as cache:  # a fresh LoRA cache: the LoRA is trained every time
        editor = DragEditor(pipe, lora_cache_dir=cache)
        sync(device)
        load_s = time.perf_counter() - start
        image, instruction = test_picture(size)
        if not args.no_warmup:  # one-time costs (kernel selection, allocator growth) out of the timed edit
            log.info("warm-up edit ...")
            short = {"lora.steps": 2, "drag.max_iterations": 2, "inversion.num_steps": 4, "seed": 1}
            editor.edit(image, instruction, config.override(**short))
        log.info("timed edit ...")
        row = timed_edit(editor, image, instruction, config)
    row.update(
        load_s=load_s,
        image_size=size,
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        tiny=args.tiny,
        warmup=not args.no_warmup,
        config=config.to_dict(),
        versions=package_versions(),
    )
    print_table(row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, row)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
