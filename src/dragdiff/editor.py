"""``DragEditor``: loads a model once, checks each edit's inputs, runs the chosen drag method, keeps caches.

An edit runs as numbered steps:
    0. check       the inputs, before any work (``check_inputs``): one-line errors naming the value
    1. prepare     work size, resized image, points on the supervision grid, mask at latent size, prompt
    2. method      ``dragdiff.methods.<config.method>``: streams its own steps (LoRA, inversion, drag,
                   denoise, decode for ``dragdiffusion``; warp, fill for ``warp``), returns a ``DragOutcome``
    3. keep        with a mask, every pixel outside it is the input's (``keep_outside_mask``; off in
                   ``faithful``)
    4. paste       the edited region of interest back into the full-resolution original (``dragdiff.roi``)
    5. record      the JSON record and the ``DragResult``
Steps 1-3 run on the region of interest (``roi``: "auto" by default, a box around the drag), so the model's
work size is spent on the part that changes and every pixel outside the box stays the input's.
``iter_edit`` streams a ``ProgressEvent`` per step and honours a stop flag; ``edit`` runs it to the end.
The editor also owns what outlives one edit: the identity-LoRA cache (in memory and on disk) and the
inverted latents of recent images (``identity_lora``, ``start_latent``: the ``ModelCaches`` of a method).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dragdiff.config import ConfigError, EditConfig, GenerateConfig
from dragdiff.diffusion.attention import controlled_layers
from dragdiff.diffusion.clock import Clock
from dragdiff.diffusion.context import EditContext, Prepared
from dragdiff.diffusion.family import family_of
from dragdiff.diffusion.generate import GeneratedImage, generate
from dragdiff.diffusion.graphs import GraphedForward, graphs_usable
from dragdiff.diffusion.inversion import (
    ddim_scheduler,
    encode_image,
    image_to_tensor,
    invert_steps,
)
from dragdiff.diffusion.loading import (
    load_pipeline,
    model_identity,
    native_size,
    resolve_device,
    resolve_dtype,
    size_multiple,
    upcast_vae,
    weights_fingerprint,
)
from dragdiff.diffusion.lora import (
    LoraCache,
    LoraState,
    adapter_fits,
    deltas_fit,
    lora_cache_key,
    train_lora,
)
from dragdiff.diffusion.unet import text_conditioning, unet_eps
from dragdiff.geometry.blend import keep_outside
from dragdiff.io import package_versions
from dragdiff.methods import DragOutcome, get_method
from dragdiff.ops import image_to_grid, resize_mask, work_size
from dragdiff.roi import Box, choose_roi, crop_instruction, paste_roi, shift_points
from dragdiff.types import DragInstruction, DragResult, InputError, Point, ProgressEvent

logger = logging.getLogger(__name__)

__all__ = ["DragEditor", "EditRun", "GeneratedImage"]


KEEP_FEATHER_PX = 2  # soft inner edge of the kept-outside-mask composite, in work-size pixels


class EditRun(Iterator[ProgressEvent]):
    """What ``iter_edit`` returns: yields ProgressEvents; ``result`` holds the DragResult once exhausted."""

    def __init__(self, steps: Generator[ProgressEvent, None, DragResult]) -> None:
        self._steps = steps
        self.result: DragResult | None = None

    def __iter__(self) -> EditRun:
        return self

    def __next__(self) -> ProgressEvent:
        try:
            return next(self._steps)
        except StopIteration as done:
            self.result = done.value
            raise

    def close(self) -> None:
        """Abandon the edit (the UNet is restored: adapters and attention processors removed)."""
        self._steps.close()


class DragEditor:
    """Loads a model once and runs drag edits on it (see the module docstring for the steps).

    ``model``: None (the embedded default model), a path or hub id (``diffusion.loading.load_pipeline``),
    or a ready ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (SD-1.x, SD-2.x, SDXL:
    ``diffusion.family``). Edits on one editor run one at a time (a lock serialises them).
    """

    def __init__(
        self,
        model: Any = None,
        vae: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        lora_cache_dir: str | os.PathLike[str] | None = None,
        model_config: str | os.PathLike[str] | None = None,
    ) -> None:
        start = time.perf_counter()
        if model is None or isinstance(model, str | os.PathLike):
            pipe = load_pipeline(model, vae=vae, device=device, dtype=dtype, config=model_config)
        else:  # a pipeline object
            pipe = model
            pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
            if device is not None or dtype is not None:
                dev = resolve_device(device) if device is not None else pipe.unet.device
                pipe.to(device=dev, dtype=resolve_dtype(dtype, dev) if dtype is not None else None)
            upcast_vae(pipe, family_of(pipe))
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False).eval()
        self.pipe = pipe
        self.model_id = model_identity(pipe)
        self._weights_id = f"{self.model_id}#{weights_fingerprint(pipe)}"  # LoRA cache key: path + weights
        self.family = family_of(pipe)  # sd1 / sd2 / sdxl (SD3, FLUX, … were refused at loading)
        self.native = native_size(pipe)
        self.multiple = size_multiple(pipe)
        self.lora_cache = LoraCache(lora_cache_dir, pipeline_class=self.family.pipeline_class)
        # fast path: z_t (+ its timestep and denoising schedule) by everything inversion depends on, so a
        # repeat drag on the same image skips inversion as it skips LoRA training (in memory, LRU)
        self._inverted: OrderedDict[str, tuple[Tensor, int, list[int]]] = OrderedDict()
        self._inverted_capacity = 8
        self.load_seconds = time.perf_counter() - start
        self._busy = threading.Lock()

    @property
    def device(self) -> torch.device:
        return torch.device(self.pipe.unet.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    # --- public API ----------------------------------------------------------------------------------

    def edit(
        self,
        image: Image.Image | GeneratedImage,
        instruction: DragInstruction,
        config: EditConfig | None = None,
        stop: threading.Event | None = None,
        roi: str = "auto",
    ) -> DragResult:
        """Run a whole edit and return its result (``roi``: see ``iter_edit``)."""
        run = self.iter_edit(image, instruction, config, stop, roi=roi)
        for _ in run:
            pass
        assert run.result is not None
        return run.result

    def iter_edit(
        self,
        image: Image.Image | GeneratedImage,
        instruction: DragInstruction,
        config: EditConfig | None = None,
        stop: threading.Event | None = None,
        roi: str = "auto",
    ) -> EditRun:
        """Check the inputs now, then stream the edit's progress; the DragResult is ``run.result`` at the end.

        Setting ``stop`` ends the optimisation early; the edit still denoises and returns (``stopped=True``).
        ``roi``: the region the model edits, "auto" (a box around the drag), "full" or "X0,Y0,X1,Y1"
        (``dragdiff.roi``); every pixel outside it is the input's. A GeneratedImage is always edited whole.
        """
        config = config if config is not None else EditConfig()
        self.check_inputs(image, instruction, config)
        config = self.for_model(config)
        box = self.choose_roi(image, instruction, roi)
        return EditRun(self._edit_steps(image, instruction, config, stop or threading.Event(), box))

    def choose_roi(
        self, image: Image.Image | GeneratedImage, instruction: DragInstruction, roi: str = "auto"
    ) -> Box:
        """The box (x0, y0, x1, y1) an edit of ``image`` runs on (``dragdiff.roi.choose_roi``)."""
        picture = image.image if isinstance(image, GeneratedImage) else image
        spec = "full" if isinstance(image, GeneratedImage) else roi  # its latents are the whole picture
        return choose_roi(picture.size, instruction, self.native, self.multiple, spec, picture=picture)

    def generate(self, prompt: str, config: EditConfig | GenerateConfig | None = None) -> GeneratedImage:
        """Text-to-image with every latent kept, for generated-image mode (SPEC §6)."""
        gen_cfg = config.generate if isinstance(config, EditConfig) else (config or GenerateConfig())
        with self._busy:
            return generate(self.pipe, prompt, gen_cfg)

    def prepare_lora(
        self, image: Image.Image, prompt: str = "", config: EditConfig | None = None
    ) -> Iterator[ProgressEvent]:
        """Train (or find cached) the identity LoRA for this image and prompt; yields progress events."""
        config = config if config is not None else EditConfig()
        if not isinstance(image, Image.Image):
            raise InputError(f"prepare_lora needs a PIL image, got {type(image).__name__}")
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        return self._prepare_lora_steps(image, prompt, config)

    def _prepare_lora_steps(
        self, image: Image.Image, prompt: str, config: EditConfig
    ) -> Iterator[ProgressEvent]:
        with self._busy, self._on_device():
            w, h = work_size(image.width, image.height, self.native, self.multiple)
            yield from self.identity_lora(
                image.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), prompt, config
            )

    def for_model(self, config: EditConfig) -> EditConfig:
        """``config`` with what it leaves to the model family filled in (``drag.feature_up_block`` and
        ``drag.supervision_scale`` when None: ``diffusion.family``); the edit's record shows these values."""
        drag = config.drag
        block = self.family.feature_up_block if drag.feature_up_block is None else drag.feature_up_block
        scale = drag.supervision_scale
        scale = self.family.supervision_scale(self.native) if scale is None else scale
        if (block, scale) == (drag.feature_up_block, drag.supervision_scale):
            return config
        return config.override(**{"drag.feature_up_block": block, "drag.supervision_scale": scale})

    # --- input checks -------------------------------------------------------------------------------

    def check_inputs(self, image: Any, instruction: Any, config: Any) -> None:
        """Fail loudly, naming the offending value, before any work is done."""
        if not isinstance(config, EditConfig):
            raise ConfigError(f"config must be an EditConfig, got {type(config).__name__}")
        if not isinstance(instruction, DragInstruction):
            raise InputError(f"instruction must be a DragInstruction, got {type(instruction).__name__}")
        if not isinstance(instruction.prompt, str):
            raise InputError(f"prompt must be a string, got {type(instruction.prompt).__name__}")
        if isinstance(image, GeneratedImage):
            self._check_generated(image, config)
            picture = image.image
        elif isinstance(image, Image.Image):
            picture = image
        else:
            raise InputError(f"image must be a PIL image or a GeneratedImage, got {type(image).__name__}")
        instruction.validate_for(picture.width, picture.height)
        if instruction.mask is not None:
            mask = np.asarray(instruction.mask)
            if mask.dtype != bool and not ((mask == 0) | (mask == 1)).all():  # no sort of a 12-MP mask
                values = np.unique(mask)
                raise InputError(f"mask must be binary (bool or 0/1), got values {values[:5].tolist()}")
        n_up = len(self.pipe.unet.up_blocks)
        block = self.for_model(config).drag.feature_up_block
        if block is None or block >= n_up:
            raise ConfigError(f"drag.feature_up_block must be < {n_up} for this UNet, got {block}")
        try:
            controlled_layers(self.pipe.unet, config.denoise.control_levels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _check_generated(self, gen: GeneratedImage, config: EditConfig) -> None:
        if gen.model_id and not _same_model(gen.model_id, self.model_id):
            raise InputError(
                f"the generated image was made with model {gen.model_id!r} but this editor runs "
                f"{self.model_id!r}: drag it with the model that generated it"
            )
        f = self.pipe.vae_scale_factor
        h, w = gen.latents.shape[-2:]
        if (gen.image.width, gen.image.height) != (w * f, h * f):
            raise InputError(
                f"the generated image is {gen.image.width}x{gen.image.height} but its latents are for "
                f"{w * f}x{h * f}: was it resized or replaced?"
            )
        if gen.latents.shape[1] != self.pipe.unet.config.in_channels:
            raise InputError(
                f"generated latents have {gen.latents.shape[1]} channels; this model needs "
                f"{self.pipe.unet.config.in_channels} (made with another model?)"
            )
        n_inv = round(config.inversion.strength * gen.num_steps)
        if not 1 <= n_inv <= gen.num_steps:
            raise ConfigError(
                f"inversion.strength {config.inversion.strength} selects no step of {gen.num_steps}"
            )

    # --- the edit, step by step ----------------------------------------------------------------------

    # --- the edit, step by step ----------------------------------------------------------------------

    def _edit_steps(
        self,
        image: Image.Image | GeneratedImage,
        instruction: DragInstruction,
        config: EditConfig,
        stop: threading.Event,
        box: Box,
    ) -> Generator[ProgressEvent, None, DragResult]:
        method = get_method(config.method)
        full = _whole(image, box)
        picture = image if isinstance(image, Image.Image) else image.image
        crop = image if full else picture.crop(box).convert("RGB")  # only the crop is copied
        local = instruction if full else crop_instruction(instruction, box)
        with self._busy, self._on_device():
            clock = Clock(self.device)
            prep = self._prepare(crop, local, config)  # 1
            clock.lap("prepare")
            ctx = EditContext(self.pipe, prep, self._amp(config), self._graphed(config), clock, caches=self)
            outcome = yield from _lifted(method(ctx, local, config, stop), picture, box)  # 2
            edited = outcome.image
            if config.keep_outside_mask and local.mask is not None:  # 3
                feather = max(1, round(KEEP_FEATHER_PX * max(prep.image_hw) / max(prep.work_hw)))
                edited = keep_outside(prep.source, edited, np.asarray(local.mask, bool), feather)
            clock.lap("keep")
            if not full:  # 4
                edited = paste_roi(picture, edited, box)
                outcome = _lift_outcome(outcome, picture, box)
            clock.lap("paste")
        yield ProgressEvent(phase="done", step=1, total=1, handles=outcome.final_handles)
        source = prep.source if full else _rgb(picture)
        return self._result(instruction, config, prep, outcome, clock, edited, box, source)  # 5

    # 1. prepare (cheap for every method: the prompt encoding is one text-encoder call)
    def _prepare(
        self, image: Image.Image | GeneratedImage, instruction: DragInstruction, config: EditConfig
    ) -> Prepared:
        gen = image if isinstance(image, GeneratedImage) else None
        picture = gen.image if gen is not None else image
        assert isinstance(picture, Image.Image)
        image_hw = (picture.height, picture.width)
        if gen is not None:
            f = self.pipe.vae_scale_factor
            work_w, work_h = gen.latents.shape[-1] * f, gen.latents.shape[-2] * f
            work_image = None
            cond = text_conditioning(
                self.pipe, gen.prompt, (work_h, work_w), gen.negative_prompt, gen.guidance_scale
            )
        else:
            work_w, work_h = work_size(picture.width, picture.height, self.native, self.multiple)
            work_image = picture.convert("RGB").resize((work_w, work_h), Image.Resampling.BICUBIC)
            guidance = config.inversion.guidance_scale
            negative = "" if guidance > 1 else None
            cond = text_conditioning(self.pipe, instruction.prompt, (work_h, work_w), negative, guidance)
        scale = self.for_model(config).drag.supervision_scale
        assert scale is not None
        grid_hw = (max(1, round(work_h * scale)), max(1, round(work_w * scale)))
        device = self.device
        handles = torch.tensor(
            [p.as_tuple() for p in instruction.handles], dtype=torch.float32
        )  # (N, 2) (x, y)
        targets = torch.tensor([p.as_tuple() for p in instruction.targets], dtype=torch.float32)
        f = self.pipe.vae_scale_factor
        mask = None
        if instruction.mask is not None:
            mask = resize_mask(
                torch.from_numpy(np.asarray(instruction.mask, dtype=np.float32)), (work_h // f, work_w // f)
            )
            mask = mask.to(device)  # (1, 1, h, w)
        return Prepared(
            image_hw=image_hw,
            work_hw=(work_h, work_w),
            grid_hw=grid_hw,
            source=picture.convert("RGB"),
            work_image=work_image,
            handles=image_to_grid(handles, image_hw, grid_hw).to(device),
            targets=image_to_grid(targets, image_hw, grid_hw).to(device),
            mask=mask,
            cond=cond,
            generated=gen,
            prompt=instruction.prompt,
        )

    # --- the caches a method reads (``diffusion.context.ModelCaches``) ---------------------------------

    def identity_lora(
        self, work_image: Image.Image, prompt: str, config: EditConfig
    ) -> Generator[ProgressEvent, None, LoraState]:
        fast = config.runtime.fast
        key = self._lora_key(work_image, prompt, config)
        cached = self.lora_cache.get(key)
        fits = deltas_fit if fast else adapter_fits
        if cached is not None and fits(self.pipe.unet, config.lora, cached):
            yield ProgressEvent(
                phase="lora", step=config.lora.steps, total=config.lora.steps, message="cached"
            )
            return cached
        if cached is not None:  # a cached adapter that does not fit this UNet: a miss, trained again
            self.lora_cache.discard(key)
        side = max(work_image.width, work_image.height)  # crops of the native size (the long side)
        state = yield from train_lora(
            self.pipe,
            work_image,
            prompt,
            config.lora,
            side,
            self._lora_amp(config),
            config.seed,
            share_encoding=fast,
            cuda_graphs=self._graphed(config),
            hooked=fast,
        )
        self.lora_cache.put(key, state, config.lora)
        return state

    def _lora_key(self, work_image: Image.Image, prompt: str, config: EditConfig) -> str:
        """The LoRA cache key; fast-path adapters (crops encoded once) are kept apart from faithful ones."""
        precision = str(self._lora_amp(config)) + ("+shared-crops" if config.runtime.fast else "")
        return lora_cache_key(
            work_image, prompt, self._weights_id, config.lora, seed=config.seed, precision=precision
        )

    def start_latent(
        self, prep: Prepared, config: EditConfig
    ) -> Generator[ProgressEvent, None, tuple[Tensor, int, list[int]]]:
        """z_t, its timestep t and the timesteps that denoise it; inversion streams one event per step."""
        scheduler = self.pipe.scheduler
        if prep.generated is not None:
            gen = prep.generated
            n_inv = round(config.inversion.strength * gen.num_steps)
            index = gen.num_steps - n_inv  # SPEC §6: t = 681 is index 15 of 50
            scheduler.set_timesteps(gen.num_steps)
            steps = list(gen.timesteps[index:])
            return gen.latents[index : index + 1].to(self.device), steps[0], steps
        inv, amp = config.inversion, self._amp(config)
        assert prep.work_image is not None
        key = self._inversion_key(prep, config) if config.runtime.fast else None
        if key is not None and key in self._inverted:  # a repeat drag on the same image
            self._inverted.move_to_end(key)
            latents, t, steps = self._inverted[key]
            yield ProgressEvent(
                phase="inversion", step=inv.inverted_steps, total=inv.inverted_steps, message="cached"
            )
            return latents.clone(), t, list(steps)
        z0 = encode_image(self.pipe, image_to_tensor(prep.work_image))  # (1, 4, h, w) posterior mean × sf

        def unet_call(z: Tensor, t: int | Tensor) -> Tensor:
            return unet_eps(self.pipe.unet, z, t, prep.cond, amp)

        tag = ("inversion", id(self.pipe.unet), amp, prep.cond.cfg)  # one warm-up per process
        graphed = self._graphed(config)
        eps_fn: Callable[..., Tensor] = GraphedForward(unet_call, tag) if graphed else unet_call
        run = invert_steps(scheduler, z0, eps_fn, inv.num_steps, inv.inverted_steps)
        while True:
            try:
                step = next(run)
            except StopIteration as done:
                result, _ = done.value
                out = result.latents, result.timestep, list(result.denoise_timesteps)
                if key is not None:
                    self._inverted[key] = (out[0].clone(), out[1], list(out[2]))
                    while len(self._inverted) > self._inverted_capacity:
                        self._inverted.popitem(last=False)
                return out
            yield ProgressEvent(phase="inversion", step=step, total=inv.inverted_steps)

    def _inversion_key(self, prep: Prepared, config: EditConfig) -> str:
        """Everything z_t depends on: the image at work size, prompt, model weights, LoRA (its cache key, or
        none), autocast dtype, inversion settings and guidance."""
        assert prep.work_image is not None
        lora = config.lora.enabled and config.lora.steps > 0
        meta = {
            "lora": self._lora_key(prep.work_image, prep.prompt, config) if lora else None,
            "image": lora_cache_key(prep.work_image, prep.prompt, self._weights_id, config.lora),
            "amp": str(self._amp(config)),
            "inversion": dataclasses.asdict(config.inversion),
        }
        return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()

    def _on_device(self) -> Any:
        """The editor's CUDA device as the current one (streams, events and graphs are made on the current
        device), e.g. for an editor on cuda:1 in a process whose current device is cuda:0."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()

    def _graphed(self, config: EditConfig) -> bool:
        """Whether this edit replays its loops as CUDA graphs (fast path, CUDA, ``runtime.cuda_graphs``)."""
        return config.runtime.fast and graphs_usable(self.device, config.runtime.cuda_graphs)

    def _lora_amp(self, config: EditConfig) -> torch.dtype | None:
        """Autocast dtype of the LoRA training: the fast path on CUDA trains a half-precision UNet in its own
        dtype (SPEC §2 fixes a half-precision base and fp32 LoRA parameters, not autocast: the branch runs in
        fp16 from the fp32 parameters, as under autocast, without autocast's fp32 GroupNorm and casts)."""
        amp = self._amp(config)
        if config.runtime.fast and self.device.type == "cuda" and amp == self.pipe.unet.dtype:
            return None  # autocast to the weights' own (half) dtype: run in that dtype instead
        return amp

    def _amp(self, config: EditConfig) -> torch.dtype | None:
        """Autocast dtype for UNet calls: None = run in the UNet's own dtype (fp32 maths on CPU)."""
        precision, unet_dtype = config.runtime.precision, self.pipe.unet.dtype
        if precision == "fp16":
            return torch.float16
        if precision == "bf16":
            return torch.bfloat16
        if precision == "auto" and self.device.type == "cuda":
            # half weights: no autocast at all, the UNet runs in its own dtype (as diffusers' pipelines do;
            # autocast would run every GroupNorm in fp32 and cast around it); fp32 weights: bf16 autocast
            return None if unet_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        return unet_dtype if unet_dtype != torch.float32 else None

    def _result(
        self,
        instruction: DragInstruction,
        config: EditConfig,
        prep: Prepared,
        outcome: DragOutcome,
        clock: Clock,
        edited: Image.Image,
        box: Box,
        source: Image.Image,
    ) -> DragResult:
        source = prep.generated.image if prep.generated is not None else source
        record = {
            "config": config.to_dict(),
            "method": config.method,
            "mode": "generated" if prep.generated is not None else "real",
            "instruction": {
                "handles": [list(p.as_tuple()) for p in instruction.handles],
                "targets": [list(p.as_tuple()) for p in instruction.targets],
                "mask": instruction.mask is not None,
                "prompt": prep.generated.prompt if prep.generated is not None else instruction.prompt,
            },
            **outcome.record,
            "kept_outside_mask": bool(config.keep_outside_mask and instruction.mask is not None),
            "timings": clock.totals(),
            "seed": config.seed,
            "package_versions": package_versions(),
            "model": self.model_id,
            "family": self.family.name,
            "prediction_type": str(self.pipe.scheduler.config.prediction_type),
            "image_size": [source.width, source.height],
            "roi": list(box),
            "work_size": [prep.work_hw[1], prep.work_hw[0]],
            "grid_size": [prep.grid_hw[1], prep.grid_hw[0]],
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        return DragResult(
            image=edited,
            source=source,
            instruction=instruction,
            final_handles=outcome.final_handles,
            iterations=outcome.iterations,
            timings=clock.totals(),
            record=record,
            frames=[self._frame(p, instruction, h) for p, h in outcome.previews],
            stopped=outcome.stopped,
        )

    @staticmethod
    def _frame(preview: Image.Image, instruction: DragInstruction, handles: tuple[Point, ...]) -> Image.Image:
        from dragdiff.viz import draw_tracking

        return draw_tracking(preview, instruction.handles, instruction.targets, handles)


def _same_model(a: str, b: str) -> bool:
    """Two model identities name the same model: equal, or paths to the same file/folder."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


# --- the region of interest: what runs on the crop, in the full image's coordinates -----------------------


def _rgb(picture: Image.Image) -> Image.Image:
    """``picture`` as RGB, without a copy when it already is (a 12-MP copy costs 36 MB)."""
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def _whole(image: Image.Image | GeneratedImage, box: Box) -> bool:
    picture = image.image if isinstance(image, GeneratedImage) else image
    return box == (0, 0, picture.width, picture.height)


def _lift_preview(preview: Image.Image, picture: Image.Image, box: Box) -> Image.Image:
    """A preview of the crop pasted into the full picture (previews may be smaller than the crop)."""
    x0, y0, x1, y1 = box
    full = picture.convert("RGB")  # a new image
    full.paste(preview.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC), (x0, y0))
    return full


def _lifted(
    steps: Generator[ProgressEvent, None, DragOutcome], picture: Image.Image, box: Box
) -> Generator[ProgressEvent, None, DragOutcome]:
    """The method's events with handles (and previews) in the full image's coordinates."""
    if box == (0, 0, picture.width, picture.height):
        return (yield from steps)
    x0, y0 = box[:2]
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        preview = None if event.preview is None else _lift_preview(event.preview, picture, box)
        yield dataclasses.replace(event, handles=shift_points(event.handles, x0, y0), preview=preview)


def _lift_outcome(outcome: DragOutcome, picture: Image.Image, box: Box) -> DragOutcome:
    """The method's outcome with its handles and previews in the full image's coordinates."""
    x0, y0 = box[:2]
    record = dict(outcome.record)
    if "tracked_handles" in record:
        record["tracked_handles"] = {
            k: [[x + x0, y + y0] for x, y in v] for k, v in record["tracked_handles"].items()
        }
    return dataclasses.replace(
        outcome,
        initial_handles=shift_points(outcome.initial_handles, x0, y0),
        final_handles=shift_points(outcome.final_handles, x0, y0),
        previews=[(_lift_preview(p, picture, box), shift_points(h, x0, y0)) for p, h in outcome.previews],
        record=record,
    )
