"""``DragEditor``: the DragDiffusion orchestrator (paper §3; SPEC §1–§6).

An edit runs as numbered steps, each a method below:
    1. prepare     work size, resized image, points on the supervision grid, mask at latent size, prompt
    2. LoRA        identity-preserving LoRA, trained once per (image, prompt, model, config) and cached (§2)
    3. inversion   DDIM inversion to z_t (§3), or the stored latent of a generated image (§6)
    4. drag        latent optimisation: motion supervision + point tracking (§4, Eq. 3–4)
    5. denoise     [z_t, ẑ_t] with reference-latent control (§5)
    6. decode      the edited branch, resized back to the input size
``iter_edit`` streams a ``ProgressEvent`` per step and honours a stop flag; ``edit`` runs it to the end.
Generated-image mode (``edit(GeneratedImage, …)``) skips steps 2–3 and keeps classifier-free guidance.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dragdiff.config import ConfigError, EditConfig, GenerateConfig
from dragdiff.diffusion.attention import controlled_layers, reference_control
from dragdiff.diffusion.features import capture_up_block
from dragdiff.diffusion.generate import GeneratedImage, generate
from dragdiff.diffusion.graphs import (
    WARMUP_STEPS,
    CapturedStep,
    GraphedForward,
    graphs_usable,
    on_side_stream,
)
from dragdiff.diffusion.inversion import (
    alpha_at,
    ddim_scheduler,
    decode_latents,
    encode_image,
    encode_prompt,
    image_to_tensor,
    invert_steps,
    previous_timestep,
    tensor_to_pil,
)
from dragdiff.diffusion.loading import (
    load_pipeline,
    model_identity,
    native_size,
    resolve_device,
    resolve_dtype,
    size_multiple,
    weights_fingerprint,
)
from dragdiff.diffusion.lora import (
    LoraCache,
    LoraState,
    adapter_fits,
    deltas_fit,
    lora_adapter,
    lora_cache_key,
    merged_lora,
    train_lora,
)
from dragdiff.diffusion.unet import Conditioning, channels_last, combine_features, unet_eps, unet_features
from dragdiff.io import package_versions
from dragdiff.ops import (
    ddim_transfer,
    features_at,
    grid_to_image,
    image_to_grid,
    mask_term,
    motion_loss,
    predict_x0_eps,
    reached,
    resize_bilinear,
    resize_mask,
    track_points,
    work_size,
)
from dragdiff.types import DragInstruction, DragResult, InputError, Point, ProgressEvent

logger = logging.getLogger(__name__)

__all__ = ["DragEditor", "EditRun", "GeneratedImage"]


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


@dataclass
class _Prepared:
    """Step 1's output: everything later steps need, in engine units."""

    image_hw: tuple[int, int]  # (H, W) of the user's image
    work_hw: tuple[int, int]  # (H', W') pixels the model runs at
    grid_hw: tuple[int, int]  # supervision grid (SPEC §4: half the work size)
    work_image: Image.Image | None  # real mode: the image at work size
    handles: Tensor  # (N, 2) (row, col) on the grid
    targets: Tensor  # (N, 2)
    mask: Tensor | None  # (1, 1, h, w) at latent size, 1 = may change
    cond: Conditioning
    generated: GeneratedImage | None
    prompt: str  # the instruction's prompt (real mode: the LoRA and inversion depend on it)


class DragEditor:
    """Loads a model once and runs drag edits on it (see the module docstring for the steps).

    ``model``: None (the embedded default model), a path or hub id (``diffusion.loading.load_pipeline``),
    or a ready ``StableDiffusionPipeline``. Edits on one editor run one at a time (a lock serialises them).
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
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        self.pipe = pipe
        self.model_id = model_identity(pipe)
        self._weights_id = f"{self.model_id}#{weights_fingerprint(pipe)}"  # LoRA cache key: path + weights
        self.native = native_size(pipe)
        self.multiple = size_multiple(pipe)
        self.lora_cache = LoraCache(lora_cache_dir)
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
    ) -> DragResult:
        """Run a whole edit and return its result."""
        run = self.iter_edit(image, instruction, config, stop)
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
    ) -> EditRun:
        """Check the inputs now, then stream the edit's progress; the DragResult is ``run.result`` at the end.

        Setting ``stop`` ends the optimisation early; the edit still denoises and returns (``stopped=True``).
        """
        config = config if config is not None else EditConfig()
        self.check_inputs(image, instruction, config)
        return EditRun(self._edit_steps(image, instruction, config, stop or threading.Event()))

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
            yield from self._identity_lora(
                image.convert("RGB").resize((w, h), Image.Resampling.BICUBIC), prompt, config
            )

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
            values = np.unique(np.asarray(instruction.mask))
            if not np.isin(values, (0, 1)).all():
                raise InputError(f"mask must be binary (bool or 0/1), got values {values[:5].tolist()}")
        n_up = len(self.pipe.unet.up_blocks)
        if config.drag.feature_up_block >= n_up:
            raise ConfigError(
                f"drag.feature_up_block must be < {n_up} for this UNet, got {config.drag.feature_up_block}"
            )
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

    def _edit_steps(
        self,
        image: Image.Image | GeneratedImage,
        instruction: DragInstruction,
        config: EditConfig,
        stop: threading.Event,
    ) -> Generator[ProgressEvent, None, DragResult]:
        if config.method == "warp":
            return (yield from self._warp_steps(image, instruction, config))
        fast, unet = config.runtime.fast, self.pipe.unet
        cuda = self.device.type == "cuda"
        with self._busy, self._on_device(), channels_last(unet, fast and cuda):
            clock = _Clock(self.device)
            prep = self._prepare(image, instruction, config)  # 1
            clock.lap("prepare")
            lora: LoraState | None = None
            if prep.work_image is not None and config.lora.enabled and config.lora.steps > 0:
                lora = yield from self._identity_lora(prep.work_image, instruction.prompt, config)  # 2
            clock.lap("lora")
            adapter: Any = nullcontext()
            if lora is not None:  # fast: merged into the weights; faithful: peft's side branch
                adapter = (
                    merged_lora(unet, config.lora, lora) if fast else lora_adapter(unet, config.lora, lora)
                )
            with adapter:
                z_t, t, steps = yield from self._start_latent(prep, config)  # 3
                clock.lap("inversion")
                drag = yield from self._optimise(prep, z_t, t, config, stop)  # 4
                clock.lap("drag")
                latents = yield from self._denoise(prep, z_t, drag.latents, steps, config)  # 5
                clock.lap("denoise")
            edited = self._decode(latents[1:2], prep.image_hw)  # 6
            clock.lap("decode")
            yield ProgressEvent(phase="done", step=1, total=1, handles=drag.final_handles)
            return self._result(image, instruction, config, prep, drag, t, clock, edited, lora is not None)

    def _warp_steps(
        self, image: Image.Image | GeneratedImage, instruction: DragInstruction, config: EditConfig
    ) -> Generator[ProgressEvent, None, DragResult]:
        """The ``warp`` method (``methods.warp``): explicit warp + model fill; no LoRA, no optimisation."""
        from dragdiff.methods.warp import warp_edit

        picture = image.image if isinstance(image, GeneratedImage) else image
        with self._busy, self._on_device(), torch.no_grad():
            clock = _Clock(self.device)
            w, h = work_size(picture.width, picture.height, self.native, self.multiple)
            edited, plan = yield from warp_edit(
                self.pipe, picture, instruction, config.warp, (h, w), self._amp(config)
            )
            clock.lap("warp")
        yield ProgressEvent(phase="done", step=1, total=1, handles=instruction.targets)
        record = {
            "config": config.to_dict(),
            "method": "warp",
            "instruction": {
                "handles": [list(p.as_tuple()) for p in instruction.handles],
                "targets": [list(p.as_tuple()) for p in instruction.targets],
                "mask": instruction.mask is not None,
                "prompt": instruction.prompt,
            },
            "moved_parts": int(plan.labels.max()),
            "uncovered_pixels": int(plan.hole.sum()),
            "timings": clock.totals(),
            "seed": config.seed,
            "package_versions": package_versions(),
            "model": self.model_id,
            "image_size": [picture.width, picture.height],
            "work_size": [w, h],
            "device": str(self.device),
        }
        return DragResult(
            image=edited,
            source=picture,
            instruction=instruction,
            final_handles=instruction.targets,  # the warp puts each handle's content at its target exactly
            iterations=0,
            timings=clock.totals(),
            record=record,
        )

    # 1. prepare
    def _prepare(
        self, image: Image.Image | GeneratedImage, instruction: DragInstruction, config: EditConfig
    ) -> _Prepared:
        gen = image if isinstance(image, GeneratedImage) else None
        picture = gen.image if gen is not None else image
        assert isinstance(picture, Image.Image)
        image_hw = (picture.height, picture.width)
        if gen is not None:
            f = self.pipe.vae_scale_factor
            work_w, work_h = gen.latents.shape[-1] * f, gen.latents.shape[-2] * f
            work_image = None
            cond = Conditioning(
                encode_prompt(self.pipe, gen.prompt),
                encode_prompt(self.pipe, gen.negative_prompt),
                gen.guidance_scale,
            )
        else:
            work_w, work_h = work_size(picture.width, picture.height, self.native, self.multiple)
            work_image = picture.convert("RGB").resize((work_w, work_h), Image.Resampling.BICUBIC)
            guidance = config.inversion.guidance_scale
            cond = Conditioning(
                encode_prompt(self.pipe, instruction.prompt),
                encode_prompt(self.pipe, "") if guidance > 1 else None,
                guidance,
            )
        scale = config.drag.supervision_scale
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
        return _Prepared(
            image_hw=image_hw,
            work_hw=(work_h, work_w),
            grid_hw=grid_hw,
            work_image=work_image,
            handles=image_to_grid(handles, image_hw, grid_hw).to(device),
            targets=image_to_grid(targets, image_hw, grid_hw).to(device),
            mask=mask,
            cond=cond,
            generated=gen,
            prompt=instruction.prompt,
        )

    # 2. identity LoRA
    def _identity_lora(
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
            self._amp(config),
            config.seed,
            share_encoding=fast,
            cuda_graphs=self._graphed(config),
        )
        self.lora_cache.put(key, state, config.lora)
        return state

    def _lora_key(self, work_image: Image.Image, prompt: str, config: EditConfig) -> str:
        """The LoRA cache key; fast-path adapters (crops encoded once) are kept apart from faithful ones."""
        precision = str(self._amp(config)) + ("+shared-crops" if config.runtime.fast else "")
        return lora_cache_key(
            work_image, prompt, self._weights_id, config.lora, seed=config.seed, precision=precision
        )

    # 3. inversion (real image) or the stored latent (generated image)
    def _start_latent(
        self, prep: _Prepared, config: EditConfig
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

    def _inversion_key(self, prep: _Prepared, config: EditConfig) -> str:
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

    # 4. latent optimisation
    def _optimise(
        self, prep: _Prepared, z_t: Tensor, t: int, config: EditConfig, stop: threading.Event
    ) -> Generator[ProgressEvent, None, _Drag]:
        """Motion supervision + point tracking on z_t (Eq. 3–4); one UNet forward/backward per iteration.

        Notation: ẑ_t the optimised latent (``z``), F the features on the grid, h_i/g_i handles/targets,
        f_i = F⁰ at the original handles (``reference``), x⁰_{t-1} the DDIM step from the un-optimised z_t.
        With CUDA graphs an iteration is replayed whole (forward, tracking, loss, backward, Adam step), so the
        stop rule is read after the update and a stopping iteration's update is undone (ẑ_t restored).
        """
        drag, sched, every = config.drag, self.pipe.scheduler, config.runtime.preview_every
        graphed = self._graphed(config)
        device = self.device
        # device tensors when graphed: a capture may not copy host values to the device
        alphas = alpha_at(sched, t).item(), alpha_at(sched, previous_timestep(sched, t)).item()
        a_t: float | Tensor = alphas[0]
        a_prev: float | Tensor = alphas[1]
        t_in: int | Tensor = t
        if graphed:
            a_t, a_prev = (torch.full((), a, device=device) for a in alphas)
            t_in = torch.full((), t, dtype=torch.long, device=device)
        pred_type = sched.config.prediction_type
        masked = prep.mask is not None  # ε is needed only for the mask term (and previews)
        ref: dict[str, Tensor] = {}  # "f": f_i (N, C) = F⁰ at the original handles; "x": x⁰_{t-1} (masked)

        def keep_references(f0: Tensor, eps0: Tensor | None) -> None:
            ref["f"] = features_at(f0, prep.handles)  # (N, C) f_i
            if eps0 is not None and masked:
                ref["x"] = ddim_transfer(z_t, eps0, a_t, a_prev, pred_type)

        if not config.runtime.fast:  # the reference's own no-grad forward for F⁰ and ε⁰
            with torch.no_grad():
                keep_references(*self._features(z_t, t_in, prep, config, need_eps=masked))
        z = z_t.detach().float().clone().requires_grad_(True)  # ẑ_t, the fp32 leaf
        # fused on CUDA (its step count on the device): the same in a CUDA graph as eagerly
        on_cuda = device.type == "cuda"
        optimiser = torch.optim.Adam([z], lr=drag.lr, fused=on_cuda, capturable=on_cuda)

        def forward(handles: Tensor, track: bool, need_eps: bool) -> tuple[Tensor, Tensor, Tensor | None]:
            """Features, tracking (Eq. 4), stop rule, loss (Eq. 3 + mask term) at the current ẑ_t.
            Returns (report = [all done, loss, handles (row, col)...], loss, ε or None)."""
            feats, eps = self._features(z, t_in, prep, config, need_eps=need_eps)
            if not ref:  # fast path, first iteration: ẑ_t = z_t, so this forward gives F⁰ and ε⁰ (the mask
                # term is then |x - x| = 0 with a zero gradient, as with a separate forward)
                keep_references(feats.detach(), eps.detach() if eps is not None else None)
            if track:
                handles = track_points(feats, ref["f"], handles, drag.r_p)  # Eq. 4
            done = reached(handles, prep.targets, drag.stop_distance)  # (N,) bool
            loss = motion_loss(feats, handles, prep.targets, drag.r_m, active=~done)  # Eq. 3
            if "x" in ref and eps is not None and prep.mask is not None:
                x_prev = ddim_transfer(z, eps, a_t, a_prev, pred_type)
                loss = loss + mask_term(x_prev, ref["x"], prep.mask, drag.lam)
            report = torch.cat([done.all().float().view(1), loss.detach().float().view(1), handles.flatten()])
            return report, loss, eps

        if graphed:
            n = drag.max_iterations
            run = self._graphed_iterations(z, prep.handles, optimiser, forward, masked, n, every, stop)
        else:
            run = self._eager_iterations(prep.handles, optimiser, forward, masked, config, stop)
        frames: list[tuple[Image.Image, tuple[Point, ...]]] = []
        handles, stopped, converged, iterations = prep.handles, False, False, 0
        for it, host, eps, status in run:
            handles = host[2:].view(-1, 2)
            if status != "step":
                stopped, converged = status == "stopped", status == "converged"
                break
            iterations = it + 1
            points = self._grid_to_points(handles, prep)
            preview = None
            if eps is not None and every and (it + 1) % every == 0:
                preview = self._preview(z.detach(), eps.detach(), float(a_t), pred_type, prep)
                frames.append((preview, points))
            yield ProgressEvent(
                phase="drag",
                step=iterations,
                total=drag.max_iterations,
                handles=points,
                loss=float(host[1]),
                preview=preview,
            )
        return _Drag(
            latents=z.detach(),
            initial_handles=self._to_image(prep.handles, prep),
            final_handles=self._to_image(handles, prep),
            iterations=iterations,
            stopped=stopped,
            converged=converged,
            previews=frames,
        )

    def _eager_iterations(
        self,
        handles: Tensor,
        optimiser: torch.optim.Optimizer,
        forward: Any,
        masked: bool,
        config: EditConfig,
        stop: threading.Event,
    ) -> Iterator[tuple[int, Tensor, Tensor | None, str]]:
        """The optimisation loop run op by op: yields (iteration, host report, ε, status) per iteration;
        status "step" after an update, "converged" (stop rule, no update) or "stopped" (the stop flag)."""
        every = config.runtime.preview_every
        reader = _HostReader(self.device, overlap=config.runtime.fast)
        host = torch.cat([torch.zeros(2), handles.detach().float().cpu().flatten()])
        for it in range(config.drag.max_iterations):
            if stop.is_set():
                yield it, host, None, "stopped"
                return
            preview_due = bool(every) and (it + 1) % every == 0
            report, loss, eps = forward(handles, it > 0, masked or preview_due)
            # the one host read of the iteration; the fast path queues the backward before waiting for it
            # (unused if the stop rule fires: ẑ_t is not updated)
            reader.start(report)
            optimiser.zero_grad(set_to_none=True)
            if reader.overlap:
                loss.backward()
            host = reader.wait()
            handles = report[2:].detach().view(-1, 2)
            if host[0] > 0:  # stop rule, checked before the update (SPEC §4)
                yield it, host, None, "converged"
                return
            if not reader.overlap:
                loss.backward()
            optimiser.step()
            yield it, host, eps, "step"

    def _graphed_iterations(
        self,
        z: Tensor,
        handles: Tensor,
        optimiser: torch.optim.Optimizer,
        forward: Any,
        masked: bool,
        max_iterations: int,
        preview_every: int,
        stop: threading.Event,
    ) -> Iterator[tuple[int, Tensor, Tensor | None, str]]:
        """``_eager_iterations`` with each iteration from the first tracked one on as one CUDA graph.

        The first ``WARMUP_STEPS`` iterations (at least iteration 0: no tracking, and it sets the references)
        run eagerly on a side stream, then the iteration is captured and replayed. Every iteration updates
        ẑ_t; when the report says the stop rule fired, the update is undone from the copy the iteration
        kept, which leaves ẑ_t as the eager loop leaves it. An iteration that decodes a preview needs ε on the
        host's side, so it runs eagerly too (the same computation; the graph reads the same tensors after it).
        """
        current = handles.detach().clone()  # (N, 2) the tracked handles, updated in place
        z_before = torch.empty_like(z)
        reader = _HostReader(self.device, overlap=True)
        host = torch.cat([torch.zeros(2), handles.detach().float().cpu().flatten()])

        def iteration(track: bool, need_eps: bool = masked) -> tuple[Tensor, Tensor | None]:
            z_before.copy_(z.detach())
            report, loss, eps = forward(current, track, need_eps)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            current.copy_(report[2:].view(-1, 2))
            return report, eps

        captured: CapturedStep | None = None
        for it in range(max_iterations):
            if stop.is_set():
                yield it, host, None, "stopped"
                return
            preview_due = bool(preview_every) and (it + 1) % preview_every == 0
            eps: Tensor | None = None
            if captured is None or preview_due:
                report, eps = on_side_stream(
                    lambda: iteration(it > 0, masked or preview_due)  # noqa: B023 (called now)
                )
            else:
                report, _ = captured()
            reader.start(report)
            if captured is None and max(WARMUP_STEPS, 1) <= it + 1 < max_iterations:
                # capture the next iterations while the GPU still runs this one
                optimiser.zero_grad(set_to_none=True)  # the graph allocates its own gradient
                captured = CapturedStep(lambda: iteration(track=True))
            host = reader.wait()
            if host[0] > 0:  # the stop rule fired before this update: undo it (SPEC §4)
                with torch.no_grad():
                    z.copy_(z_before)
                yield it, host, None, "converged"
                return
            yield it, host, eps, "step"

    def _features(
        self, z: Tensor, t: int | Tensor, prep: _Prepared, config: EditConfig, need_eps: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """One UNet forward: (features on the supervision grid (1, C, H'', W''), ε (1, 4, h, w) or None).

        The fast path stops the forward after the feature block when ε is not needed (None is returned);
        the features and their gradients are the same as the full forward's.
        """
        unet, index, amp = self.pipe.unet, config.drag.feature_up_block, self._amp(config)
        eps: Tensor | None = None
        if need_eps or not config.runtime.fast:
            with capture_up_block(unet, index) as capture:
                eps = unet_eps(unet, z, t, prep.cond, amp)
            raw = capture.pop()
        else:
            raw = unet_features(unet, z, t, prep.cond, index, amp)
        feats = combine_features(raw.float(), prep.cond)  # (1, C, h, w); 2C with guidance
        # = F.interpolate(bilinear, align_corners=False) as two matmuls: a deterministic backward on CUDA
        return resize_bilinear(feats, prep.grid_hw, align_corners=False), eps

    def _preview(self, z: Tensor, eps: Tensor, a_t: float, pred_type: str, prep: _Prepared) -> Image.Image:
        """x̂_0 of the current latent, decoded and resized to the input size (a cheap look at the edit)."""
        x0, _ = predict_x0_eps(z, eps, a_t, pred_type)
        return self._decode(x0, prep.image_hw)

    # 5. denoise with reference-latent control
    def _denoise(
        self, prep: _Prepared, z_src: Tensor, z_edit: Tensor, steps: list[int], config: EditConfig
    ) -> Generator[ProgressEvent, None, Tensor]:
        """Denoise the batch [source, edited]; edited self-attention reads the source's keys/values (§5)."""
        unet, sched, den = self.pipe.unet, self.pipe.scheduler, config.denoise
        amp = self._amp(config)
        z = torch.cat([z_src, z_edit]).float()  # (2, 4, h, w): [source, edited]
        control = reference_control(unet, den.control_levels) if den.reference_control else nullcontext(None)

        def unet_call(z: Tensor, t: int | Tensor, controlled: bool = False) -> Tensor:
            return unet_eps(unet, z, t, prep.cond, amp)  # [src, edit] pairs, x2 with guidance

        # graphed: one graph per state of the control switch (``controlled`` is the graph's key)
        tag = ("denoise", id(unet), amp, den.control_levels, prep.cond.cfg)
        graphed = self._graphed(config)
        eps_fn: Callable[..., Tensor] = GraphedForward(unet_call, tag) if graphed else unet_call
        with control as switch, torch.no_grad():
            for i, t in enumerate(steps):
                if switch is not None:
                    switch.enabled = i >= den.control_from_step
                eps = eps_fn(z, t, switch is not None and switch.enabled)
                z = sched.step(eps, t, z).prev_sample
                yield ProgressEvent(phase="denoise", step=i + 1, total=len(steps))
        return z

    # 6. decode
    def _decode(self, latents: Tensor, image_hw: tuple[int, int]) -> Image.Image:
        image = tensor_to_pil(decode_latents(self.pipe, latents))[0]
        h, w = image_hw
        return image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)

    # --- helpers ---------------------------------------------------------------------------------------

    def _on_device(self) -> Any:
        """The editor's CUDA device as the current one (streams, events and graphs are made on the current
        device), e.g. for an editor on cuda:1 in a process whose current device is cuda:0."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()

    def _graphed(self, config: EditConfig) -> bool:
        """Whether this edit replays its loops as CUDA graphs (fast path, CUDA, ``runtime.cuda_graphs``)."""
        return config.runtime.fast and graphs_usable(self.device, config.runtime.cuda_graphs)

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

    def _to_image(self, grid_points: Tensor, prep: _Prepared) -> tuple[Point, ...]:
        return self._grid_to_points(grid_points.detach().cpu(), prep)

    @staticmethod
    def _grid_to_points(grid_points: Tensor, prep: _Prepared) -> tuple[Point, ...]:
        """(N, 2) CPU (row, col) on the grid -> image-pixel Points."""
        xy = grid_to_image(grid_points, prep.grid_hw, prep.image_hw).tolist()
        return tuple(Point(float(x), float(y)) for x, y in xy)

    def _result(
        self,
        image: Image.Image | GeneratedImage,
        instruction: DragInstruction,
        config: EditConfig,
        prep: _Prepared,
        drag: _Drag,
        t: int,
        clock: _Clock,
        edited: Image.Image,
        used_lora: bool,
    ) -> DragResult:
        source = image.image if isinstance(image, GeneratedImage) else image
        record = {
            "config": config.to_dict(),
            "mode": "generated" if prep.generated is not None else "real",
            "instruction": {
                "handles": [list(p.as_tuple()) for p in instruction.handles],
                "targets": [list(p.as_tuple()) for p in instruction.targets],
                "mask": instruction.mask is not None,
                "prompt": prep.generated.prompt if prep.generated is not None else instruction.prompt,
            },
            "tracked_handles": {
                "before": [list(p.as_tuple()) for p in drag.initial_handles],
                "after": [list(p.as_tuple()) for p in drag.final_handles],
            },
            "iterations": drag.iterations,
            "converged": drag.converged,
            "stopped": drag.stopped,
            "timestep": t,
            "lora": used_lora,
            "timings": clock.totals(),
            "seed": config.seed,
            "package_versions": package_versions(),
            "model": self.model_id,
            "image_size": [source.width, source.height],
            "work_size": [prep.work_hw[1], prep.work_hw[0]],
            "grid_size": [prep.grid_hw[1], prep.grid_hw[0]],
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        return DragResult(
            image=edited,
            source=source,
            instruction=instruction,
            final_handles=drag.final_handles,
            iterations=drag.iterations,
            timings=clock.totals(),
            record=record,
            frames=[self._frame(p, instruction, h) for p, h in drag.previews],
            stopped=drag.stopped,
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


@dataclass
class _Drag:
    """Step 4's output."""

    latents: Tensor  # (1, 4, h, w) ẑ_t after optimisation
    initial_handles: tuple[Point, ...]  # image px
    final_handles: tuple[Point, ...]
    iterations: int
    stopped: bool
    converged: bool
    previews: list[tuple[Image.Image, tuple[Point, ...]]]  # (x̂_0 preview, tracked handles) pairs


class _HostReader:
    """The optimisation's one device->host read per iteration.

    Blocking (``overlap=False``, the faithful path) reads at ``start``. Overlapped (the fast path, on CUDA)
    starts an asynchronous copy into pinned memory and records an event, so the host can queue the backward
    before ``wait`` blocks on the copy alone rather than on everything queued so far.
    """

    def __init__(self, device: torch.device, overlap: bool) -> None:
        self.overlap = overlap and device.type == "cuda"
        self._host: Tensor | None = None
        self._event: Any = None

    def start(self, values: Tensor) -> None:
        if not self.overlap:
            self._host = values.cpu()
            return
        if self._host is None or self._host.shape != values.shape:
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        self._host.copy_(values, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def wait(self) -> Tensor:
        assert self._host is not None
        if self._event is not None:
            self._event.synchronize()
        return self._host.clone() if self.overlap else self._host


class _Clock:
    """Seconds per phase and in all.

    On CUDA a lap records an event instead of synchronising, so the host can queue the next phase (capture
    its CUDA graphs, launch its first kernels) while the GPU finishes the last one; a phase's seconds are
    then measured on the GPU's timeline (from the event ending the phase before to the one ending it), and
    ``total`` is wall-clock time once everything has finished. Elsewhere laps are wall-clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.laps: dict[str, float] = {}
        self._events: list[tuple[str, Any]] = []
        self._total: float | None = None
        self._last = self._start = time.perf_counter()
        if device.type == "cuda":
            self._events.append(("", self._event()))

    def _event(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            self._events.append((name, self._event()))
            return
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now

    def totals(self) -> dict[str, float]:
        """Seconds per phase, plus ``total`` since the clock started (the first call fixes the numbers)."""
        if self._total is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                for (_, a), (name, b) in zip(self._events, self._events[1:], strict=False):
                    self.laps[name] = a.elapsed_time(b) / 1000
                self._total = time.perf_counter() - self._start
            else:
                self._total = self._last - self._start
        return {**self.laps, "total": self._total}
