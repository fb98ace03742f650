"""``dragdiff edit`` and ``dragdiff generate``: thin command-line fronts over ``DragEditor``.

Every input is checked before the model loads; every error is one line ``dragdiff: error: …`` with exit code
2 and nothing written. Outputs are written atomically: the edited image, a JSON record beside it
(``OUT.json``), and on request an animation of the optimisation. ``generate`` writes the image and its
latents (``OUT.latents.safetensors``); ``edit OUT.png --generated OUT.latents.safetensors`` then drags the
generated image in generated-image mode (no LoRA, no inversion, guidance kept; SPEC §6).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from dragdiff.config import (
    DEFAULT_PRESET,
    METHOD_NAMES,
    PRESETS,
    ConfigError,
    EditConfig,
    GenerateConfig,
    preset,
)
from dragdiff.io import DEFAULT_QUALITY
from dragdiff.types import DragInstruction, InputError, ProgressEvent

_DEFAULTS = EditConfig()
_ANIMATION_EVERY = 4  # preview interval used for --animation when --preview-every is 0


def register(subparsers: Any) -> None:
    """Add the ``edit`` and ``generate`` subcommands (called by ``dragdiff.cli``)."""
    _register_edit(subparsers)
    _register_generate(subparsers)


# --- argument parsing ---------------------------------------------------------------------------------


def _one_line_error(message: str) -> NoReturn:
    print(f"dragdiff: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_fields() -> str:
    """``section.field=default`` for every field, for the --set help."""
    import textwrap

    items = [
        f"{section}.{k}={_show(v)}"
        for section, values in _DEFAULTS.to_dict().items()
        if isinstance(values, dict)
        for k, v in values.items()
    ]
    return textwrap.fill("  ".join(items), width=100, initial_indent="  ", subsequent_indent="  ")


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="SD-1.x, SD-2.x (ε or v-prediction) or SDXL base model: a diffusers folder, a "
        ".safetensors/.ckpt file or a hub id; the family is read from its configs, SD3/FLUX/… are refused "
        "(default: the embedded model)",
    )
    parser.add_argument(
        "--model-config",
        default=None,
        metavar="DIR",
        help="diffusers folder (same family and architecture) with the configs for a single-file --model; "
        "needed offline: diffusers would otherwise fetch them from the hub",
    )
    parser.add_argument("--vae", default=None, help="a separate VAE (diffusers folder or single file)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu … (default: CUDA if present)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("fp32", "fp16", "bf16"),
        help="model weights dtype (default: fp16 on CUDA, fp32 on CPU)",
    )


def _register_edit(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "edit",
        help="drag points of an image (warp by default; DragDiffusion with --preset dragdiffusion)",
        description="Move image content from handle points to target points with a diffusion model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields for --set (section.field=default):\n"
        + _config_fields()
        + "\n\nexample:\n  dragdiff edit cat.png --drag 120,80:160,80 --mask mask.png -o out.png",
    )
    p.error = _one_line_error  # type: ignore[method-assign]
    p.add_argument("image", help="input image (PNG/JPEG/WebP)")
    p.add_argument(
        "--drag",
        action="append",
        default=[],
        metavar="X1,Y1:X2,Y2",
        help="handle:target in image pixels; repeat for several pairs",
    )
    p.add_argument("--mask", default=None, help="editable-region mask, same size (white = may change)")
    p.add_argument("--prompt", default="", help="text describing the image (default: empty)")
    p.add_argument(
        "-o", "--output", required=True, help="edited image to write (.png/.jpg/.webp); also OUT.json"
    )
    p.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help="named configuration (default: %(default)s; docs/methods.md compares them)",
    )
    p.add_argument(
        "--method",
        default=None,
        choices=METHOD_NAMES,
        help="drag method, overriding the preset's: warp (moves the pixels, the model fills what they "
        "uncover) or dragdiffusion (the paper's latent optimisation)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of the edit's random draws, i.e. config `seed` (default: {_DEFAULTS.seed})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        dest="overrides",
        help="override a config value, e.g. --set drag.max_iterations=40 (see below)",
    )
    p.add_argument(
        "--preview-every",
        type=int,
        default=None,
        metavar="N",
        help=f"decode a preview every N iterations (default: {_DEFAULTS.runtime.preview_every}; "
        f"{_ANIMATION_EVERY} with --animation)",
    )
    p.add_argument(
        "--animation", default=None, metavar="OUT.gif", help="write the optimisation as a GIF/WebP"
    )
    p.add_argument(
        "--lora-cache",
        default=None,
        metavar="DIR",
        help="LoRA cache folder (default: $DRAGDIFF_CACHE/lora or ~/.cache/dragdiff/lora)",
    )
    p.add_argument(
        "--roi",
        default="auto",
        metavar="auto|full|X0,Y0,X1,Y1",
        help="region the model edits; every pixel outside it is the input's (default: auto, a box around "
        "the drag and mask; full: the whole image, scaled to the model's size and back; X0,Y0,X1,Y1: a box "
        "in image pixels, X1/Y1 exclusive). Generated-image mode always edits the whole image",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        metavar="Q",
        help="JPEG/WebP quality of the output, 1-100 (default: a JPEG input's own quantisation tables and "
        f"subsampling for a JPEG output, else {DEFAULT_QUALITY}). The input's ICC profile, EXIF (upright) "
        "and alpha (PNG/WebP outputs) are kept",
    )
    p.add_argument(
        "--generated",
        default=None,
        metavar="LATENTS",
        help="OUT.latents.safetensors from `dragdiff generate`: drag IMAGE in generated-image mode",
    )
    _model_args(p)
    p.set_defaults(func=run_edit)


def _register_generate(subparsers: Any) -> None:
    g = _DEFAULTS.generate
    p = subparsers.add_parser(
        "generate",
        help="generate an image to drag later (keeps its latents)",
        description="Text-to-image with DDIM + classifier-free guidance; writes OUT and "
        "OUT.latents.safetensors for `dragdiff edit OUT --generated OUT.latents.safetensors`.",
    )
    p.error = _one_line_error  # type: ignore[method-assign]
    p.add_argument("prompt", help="what to generate")
    p.add_argument("-o", "--output", required=True, help="image to write (.png/.jpg/.webp)")
    p.add_argument("--negative-prompt", default=g.negative_prompt, help="negative prompt (default: empty)")
    p.add_argument("--seed", type=int, default=g.seed, help=f"noise seed (default: {g.seed})")
    p.add_argument("--steps", type=int, default=g.num_steps, help=f"DDIM steps (default: {g.num_steps})")
    p.add_argument(
        "--guidance",
        type=float,
        default=g.guidance_scale,
        help=f"classifier-free guidance scale (default: {g.guidance_scale})",
    )
    p.add_argument("--width", type=int, default=None, help="default: the model's native size")
    p.add_argument("--height", type=int, default=None, help="default: the model's native size")
    _model_args(p)
    p.set_defaults(func=run_generate)


# --- config from the command line -----------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> EditConfig:
    """Preset, then --method, --seed and --preview-every, then every --set (validated by the dataclasses)."""
    config = preset(args.preset)
    if getattr(args, "method", None):
        config = config.override(method=args.method)
    if args.seed is not None:
        config = config.override(seed=args.seed)
    preview_every = args.preview_every
    if preview_every is None and args.animation:
        preview_every = _ANIMATION_EVERY
    if preview_every is not None:
        config = config.override(**{"runtime.preview_every": preview_every})
    config = config.with_overrides(args.overrides)
    if args.animation and config.runtime.preview_every == 0:
        raise ConfigError("--animation needs previews: runtime.preview_every must be >= 1, got 0")
    return config


# --- dragdiff edit --------------------------------------------------------------------------------------


def run_edit(args: argparse.Namespace) -> int:
    from dragdiff import io

    config = build_config(args)
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise InputError(f"--quality must be 1..100, got {args.quality}")
    image, image_file = io.load_image_file(args.image)
    if not args.drag:
        raise InputError(
            "no drag given: pass --drag X1,Y1:X2,Y2 (handle:target in image pixels) at least once"
        )
    pairs = [io.parse_drag(d) for d in args.drag]
    mask = io.load_mask(args.mask, image.size) if args.mask else None
    instruction = DragInstruction(
        handles=tuple(h for h, _ in pairs), targets=tuple(g for _, g in pairs), mask=mask, prompt=args.prompt
    )
    instruction.validate_for(image.width, image.height)
    if args.roi.strip().lower() not in ("auto", "full"):  # an explicit box is checked before the model loads
        from dragdiff.roi import choose_roi

        choose_roi(image.size, instruction, 1, 1, args.roi)
    inputs = [p for p in (args.image, args.mask, args.generated) if p]
    out = io.check_output_path(args.output, inputs, formats=io.IMAGE_FORMATS)
    record_path = io.check_output_path(out.with_suffix(".json"), inputs)
    animation = (
        io.check_output_path(args.animation, inputs + [out], formats=io.ANIMATION_FORMATS)
        if args.animation
        else None
    )
    source: Any = image
    if args.generated:
        from dragdiff.diffusion.generate import load_generated

        source = load_generated(args.generated, image)
    editor = _load_editor(args)
    result = _run_with_progress(editor, source, instruction, config, args.roi)
    record = dict(result.record)
    record["files"] = {
        "input": args.image,
        "mask": args.mask,
        "generated": args.generated,
        "output": str(out),
        "animation": str(animation) if animation else None,
    }
    record["load_seconds"] = editor.load_seconds
    io.atomic_save_image(result.image, out, quality=args.quality, like=image_file)
    io.atomic_write_json(record_path, record)
    written = [out, record_path]
    if animation is not None and result.frames:
        io.save_animation(result.frames, animation)
        written.append(animation)
    elif animation is not None:
        print(
            f"dragdiff: note: no animation written: {result.iterations} iterations gave no previews",
            file=sys.stderr,
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _load_editor(args: argparse.Namespace) -> Any:
    from dragdiff.cli import quiet_libraries

    quiet_libraries()
    from dragdiff.editor import DragEditor

    cache = Path(args.lora_cache) if getattr(args, "lora_cache", None) else None
    return DragEditor(
        args.model,
        vae=args.vae,
        device=args.device,
        dtype=args.dtype,
        lora_cache_dir=cache,
        model_config=args.model_config,
    )


def _run_with_progress(
    editor: Any, source: Any, instruction: DragInstruction, config: EditConfig, roi: str = "auto"
) -> Any:
    """Run the edit with one tqdm bar per phase; library failures become one-line errors."""
    from dragdiff.cli import CliError

    run = editor.iter_edit(source, instruction, config, threading.Event(), roi=roi)
    bars = _PhaseBars()
    try:
        for event in run:
            bars.show(event)
    except RuntimeError as exc:  # torch/diffusers failures (e.g. out of memory): one line, no traceback
        raise CliError(f"the edit failed: {_first_line(exc)}") from None
    finally:
        bars.close()
    return run.result


class _PhaseBars:
    """One tqdm bar per phase of the edit, on stderr (disabled when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.phase = ""
        self.bar: Any = None

    def show(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if event.phase != self.phase:
            self.close()
            self.phase = event.phase
            self.bar = tqdm(total=event.total, desc=event.phase, unit="step", leave=False, disable=None)
        self.bar.n = event.step
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- dragdiff generate ----------------------------------------------------------------------------------


def latents_path(output: Path) -> Path:
    """``OUT.png`` -> ``OUT.latents.safetensors``."""
    return output.with_suffix(".latents.safetensors")


def run_generate(args: argparse.Namespace) -> int:
    from dragdiff import io
    from dragdiff.cli import CliError
    from dragdiff.diffusion.generate import save_generated

    if not args.prompt.strip():
        raise InputError("generate needs a non-empty prompt")
    config = GenerateConfig(
        num_steps=args.steps,
        guidance_scale=args.guidance,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        width=args.width,
        height=args.height,
    )
    out = io.check_output_path(args.output, [], formats=io.IMAGE_FORMATS)
    latents = latents_path(out)
    io.check_output_path(latents, [])
    editor = _load_editor(args)
    try:
        gen = editor.generate(args.prompt, config)
    except RuntimeError as exc:
        raise CliError(f"generation failed: {_first_line(exc)}") from None
    io.atomic_save_image(gen.image, out)
    save_generated(gen, latents)
    print(f"wrote {out}, {latents}")
    return 0
