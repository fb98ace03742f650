"""Time a default edit on SDXL (1024²) and SD-2.1 768-v (768²) architectures with random weights (issue #19).

Compute cost does not depend on weight values, so the published component configs (written out below: SDXL
base 1.0's UNet ≈ 2.6 B parameters, its two text encoders and VAE; SD-2.1-768's UNet, OpenCLIP-H text encoder
and VAE, v-prediction) with random weights time real edits without any download. For each model and method
(the default ``warp`` and ``--preset dragdiffusion``) it builds the pipeline on the GPU in fp16, runs one
short warm-up edit, then times one edit (warm) and reads the peak GPU memory of that edit
(``torch.cuda.max_memory_allocated``). The ``dragdiffusion`` stop rule is off (``drag.stop_distance=0``):
random weights never bring the handles to the targets, and every run must do all 80 iterations.

    python benchmarks/family_speed.py --out docs/perf/family-speed/family_speed_h200.json   # GPU
    python benchmarks/family_speed.py --tiny --device cpu --out /tmp/family.json            # smoke test

Robust to a 10-minute limit: the results are written after every case (one model x one method), a case that
fails is recorded with its error and the run goes on, and ``--budget-s`` skips what would start too late.
Prints a table of the same numbers.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_sd15 import SD15_SCHEDULER, byte_tokenizer, sync, test_picture  # noqa: E402  (shared with SD-1.5's bench)

from dragdiff.config import EditConfig, preset  # noqa: E402
from dragdiff.editor import DragEditor  # noqa: E402
from dragdiff.io import atomic_write_json, package_versions  # noqa: E402

log = logging.getLogger("family_speed")

# --- published configs (stabilityai/stable-diffusion-xl-base-1.0, stabilityai/stable-diffusion-2-1) ---------
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 1280 pooled + 6 time ids x 256
    norm_num_groups=32,
)
SD21_UNET: dict[str, Any] = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    norm_num_groups=32,
)
VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
)
CLIP_L: dict[str, Any] = dict(  # openai/clip-vit-large-patch14 text tower (SDXL's first encoder)
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)
OPENCLIP_BIGG: dict[str, Any] = dict(  # laion CLIP-ViT-bigG-14 text tower (SDXL's second encoder)
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    hidden_act="gelu",
    projection_dim=1280,
)
OPENCLIP_H: dict[str, Any] = dict(  # OpenCLIP ViT-H-14 text tower as SD-2.x uses it (23 of 24 layers)
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=23,
    hidden_act="gelu",
    projection_dim=512,
)
MODELS: dict[str, dict[str, Any]] = {
    "sdxl": dict(unet=SDXL_UNET, vae=dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
                 text=(CLIP_L, OPENCLIP_BIGG), prediction="epsilon", size=1024),
    "sd2-768-v": dict(unet=SD21_UNET, vae=dict(VAE, sample_size=768, scaling_factor=0.18215),
                      text=(OPENCLIP_H,), prediction="v_prediction", size=768),
}  # fmt: skip

# tiny models of the same topologies for the CPU smoke test (64 px images)
_TINY_TEXT = dict(
    hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32
)
TINY: dict[str, dict[str, Any]] = {
    "sdxl": dict(
        unet=dict(SDXL_UNET, sample_size=16, block_out_channels=(16, 32, 32), layers_per_block=1,
                  transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4),
                  cross_attention_dim=80, addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=8 * 6 + 32, norm_num_groups=8),
        text=(dict(CLIP_L, **_TINY_TEXT), dict(OPENCLIP_BIGG, **dict(_TINY_TEXT, hidden_size=48))),
    ),
    "sd2-768-v": dict(
        unet=dict(SD21_UNET, sample_size=24, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                  attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8),
        text=(dict(OPENCLIP_H, **_TINY_TEXT),),
    ),
}  # fmt: skip
TINY_VAE = dict(VAE, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=8)  # fmt: skip


def build_pipeline(name: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> Any:
    """The named pipeline (``MODELS``) with random weights, created directly on ``device`` in ``dtype``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = dict(MODELS[name], **(TINY[name] if tiny else {}))
    vae_config = dict(TINY_VAE, scaling_factor=spec["vae"]["scaling_factor"]) if tiny else spec["vae"]
    tokenizer = byte_tokenizer(77)
    ids = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    scheduler = DDIMScheduler(**SD15_SCHEDULER, prediction_type=spec["prediction"])
    torch.manual_seed(0)
    with device:
        unet = UNet2DConditionModel(**spec["unet"])
        vae = AutoencoderKL(**vae_config)
        if name == "sdxl":
            text_1 = CLIPTextModel(CLIPTextConfig(**spec["text"][0], **ids))
            text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**spec["text"][1], **ids))
        else:
            text_1 = CLIPTextModel(CLIPTextConfig(**spec["text"][0], **ids))
    if name == "sdxl":
        pipe: Any = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_1,
            text_encoder_2=text_2,
            tokenizer=tokenizer,
            tokenizer_2=byte_tokenizer(77),
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_1,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return pipe.to(device=device, dtype=dtype)


def method_config(method: str, overrides: dict[str, Any], texts: list[str]) -> EditConfig:
    """The default edit (``warp``) or ``--preset dragdiffusion`` with every iteration forced, then
    ``overrides`` and the ``--set`` texts (e.g. ``runtime.cuda_graphs=false``)."""
    if method == "warp":
        config = preset("warp")
    else:
        config = preset("dragdiffusion").override(**{"drag.stop_distance": 0.0})
    config = config.override(**overrides) if overrides else config
    return config.with_overrides(texts)


def timed_edit(editor: DragEditor, size: int, config: EditConfig) -> dict[str, Any]:
    """One edit of the test picture at ``size``²: phase timings (s) and the edit's peak GPU memory (GiB)."""
    device = editor.device
    image, instruction = test_picture(size)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = editor.edit(image, instruction, config)
    sync(device)
    row: dict[str, Any] = {f"{k}_s": v for k, v in result.timings.items()}
    row["wall_s"] = time.perf_counter() - start
    row["iterations"] = result.iterations
    row["work_size"] = result.record["work_size"]
    row["peak_gpu_mem_gib"] = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    )
    return row


def run_case(name: str, methods: list[str], args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Build one model, then warm up and time each method on it; a failing method is recorded, not raised."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = 64 if args.tiny else MODELS[name]["size"]
    start = time.perf_counter()
    pipe = build_pipeline(name, args.tiny, device, dtype)
    rows = []
    with tempfile.TemporaryDirectory() as cache:  # a fresh LoRA cache: the LoRA is trained for the timed edit
        editor = DragEditor(pipe, lora_cache_dir=cache)
        sync(device)
        build_s = time.perf_counter() - start
        params = sum(p.numel() for p in pipe.unet.parameters())
        for method in methods:
            row: dict[str, Any] = dict(
                model=name,
                method=method,
                image_size=size,
                family=editor.family.name,
                unet_params=params,
                build_s=build_s,
                dtype=str(dtype).removeprefix("torch."),
                prediction_type=pipe.scheduler.config.prediction_type,
            )
            try:
                config = method_config(method, dict(args.short) if args.tiny else {}, args.overrides)
                row["config"] = config.to_dict()
                if not args.no_warmup:  # one-time costs (kernel choice, graph capture, allocator growth)
                    log.info("%s %s: warm-up edit ...", name, method)
                    warm = {"lora.steps": 2, "drag.max_iterations": 2, "seed": 1}
                    editor.edit(*test_picture(size), config.override(**warm))
                log.info("%s %s: timed edit ...", name, method)
                row.update(timed_edit(editor, size, config), status="ok")
            except Exception as exc:  # a failing case must not lose the others' numbers
                row.update(status="error", error=f"{type(exc).__name__}: {exc}")
                log.error("%s %s failed:\n%s", name, method, traceback.format_exc())
            rows.append(row)
    del editor, pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'model':<11}{'method':<15}{'size':>6}{'edit s':>9}{'lora':>8}{'inv':>7}{'drag':>7}"
          f"{'denoise':>9}{'fill':>7}{'peak GiB':>10}  status")  # fmt: skip
    for r in rows:

        def cell(key: str, width: int, r: dict = r) -> str:
            v = r.get(key)
            return f"{v:>{width}.2f}" if isinstance(v, float) else f"{'-':>{width}}"

        print(f"{r['model']:<11}{r['method']:<15}{r['image_size']:>6}{cell('total_s', 9)}{cell('lora_s', 8)}"
              f"{cell('inversion_s', 7)}{cell('drag_s', 7)}{cell('denoise_s', 9)}{cell('fill_s', 7)}"
              f"{cell('peak_gpu_mem_gib', 10)}  {r['status']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny random models of the same topologies (64 px)"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--models", default="sdxl,sd2-768-v", help="comma list of %(default)s")
    parser.add_argument("--methods", default="warp,dragdiffusion", help="comma list (default: %(default)s)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the short warm-up edit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        help="config override for every case, as for `dragdiff edit --set`",
    )
    parser.add_argument(
        "--budget-s", type=float, default=540.0, help="start no model after this (%(default)s s)"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here (after every case)")
    args = parser.parse_args(argv)
    args.short = {"lora.steps": 2, "lora.batch_size": 1, "inversion.num_steps": 10, "drag.max_iterations": 3}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(methods) - {"warp", "dragdiffusion"})
    if unknown:
        parser.error(
            f"unknown model/method {unknown}; models: {sorted(MODELS)}, methods: warp, dragdiffusion"
        )
    report: dict[str, Any] = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        tiny=args.tiny,
        warmup=not args.no_warmup,
        versions=package_versions(),
        rows=[],
    )
    start = time.perf_counter()
    for name in models:
        if time.perf_counter() - start > args.budget_s:
            log.warning("budget of %.0f s spent: skipping %s", args.budget_s, name)
            report["rows"].append(dict(model=name, method="-", image_size=0, status="skipped (budget)"))
            continue
        report["rows"] += run_case(name, methods, args, device)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, report)
    print_table(report["rows"])
    if args.out:
        print(f"wrote {args.out}")
    return 0 if all(r["status"] == "ok" for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
