"""Identity-preserving LoRA (paper §3.2, §4.1; SPEC §2): train, install, cache.

The LoRA is fitted to the one input image so that inversion and denoising reproduce it. Recipe (SPEC §2):
rank r = 16, α = r, on ``to_q, to_k, to_v, to_out.0`` of every UNet attention; A ~ N(0, 1/r), B = 0; AdamW
(lr 5e-4 constant, weight decay 1e-2), 80 steps of a batch of 4 independent random augmentations of the
image (resize the short side to the native size, random square crop); z_0 = VAE posterior *sample* ×
scaling_factor; t ~ U{0..T−1}; loss = MSE(ε_θ(√ᾱ_t z_0 + √(1−ᾱ_t) ε, t, c), ε) (v-target for v-prediction
models). Frozen base in the pipeline's dtype; the LoRA parameters in fp32.

Adapters are cached by ``lora_cache_key`` (image pixels at work size, prompt, model identity, LoRA config,
seed, autocast precision) in memory (LRU) and on disk in diffusers' LoRA format of the model's family
(SD-1.x/2.x or SDXL: ``diffusion.family``), so ``pipe.load_lora_weights(dir)`` loads one too. A cached
adapter that does not fit the UNet is a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Generator, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dragdiff.config import LoraConfig
from dragdiff.diffusion.graphs import (
    WARMUP_STEPS,
    CapturedStep,
    graphs_usable,
    on_side_stream,
    try_capture,
)
from dragdiff.diffusion.inversion import image_to_tensor
from dragdiff.diffusion.unet import text_conditioning
from dragdiff.types import ProgressEvent

logger = logging.getLogger(__name__)

ADAPTER = "dragdiff_identity"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA file name
LoraState = dict[str, Tensor]  # peft state dict of the adapter (keys without the adapter name), CPU fp32


def default_cache_dir() -> Path:
    """``$DRAGDIFF_CACHE/lora`` if set, else ``~/.cache/dragdiff/lora``."""
    root = os.environ.get("DRAGDIFF_CACHE")
    return Path(root).expanduser() / "lora" if root else Path.home() / ".cache" / "dragdiff" / "lora"


def peft_config(cfg: LoraConfig) -> Any:
    """The peft ``LoraConfig`` for SPEC §2 (Gaussian A with std 1/r, zero B)."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.scale_alpha,  # type: ignore[arg-type]  # peft accepts a float alpha
        init_lora_weights="gaussian",
        target_modules=list(cfg.target_modules),
    )


def lora_cache_key(
    image: Any, prompt: str, model_id: str, cfg: LoraConfig, seed: int = 0, precision: str = "fp32"
) -> str:
    """sha256 over the work-size image pixels, the prompt, the model identity, the LoRA config, the seed of
    the training's random draws (``EditConfig.seed``) and ``precision`` (the autocast dtype training used)."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    h.update(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    meta = {
        "prompt": prompt,
        "model": model_id,
        "lora": dataclasses.asdict(cfg),
        "seed": seed,
        "precision": precision,
        "format": 2,
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


# --- installing an adapter ---------------------------------------------------------------------------------


@contextmanager
def lora_adapter(
    unet: Any, cfg: LoraConfig, state: LoraState | None = None, generator: torch.Generator | None = None
) -> Iterator[list[torch.nn.Parameter]]:
    """Add the identity adapter to ``unet`` for the ``with`` block; yield its (fp32) parameters.

    ``state`` loads trained weights (a ValueError if they do not fit this UNet); otherwise A is drawn from
    N(0, 1/r) with ``generator`` (seed 0 when None) and B is zero. The parameters are frozen
    (``requires_grad=False``): gradients through the UNet (latent optimisation) then never compute or keep
    LoRA weight gradients; a trainer enables them itself. On exit the adapter is removed again, leaving the
    base UNet as it was.
    """
    had_adapters = bool(getattr(unet, "peft_config", None))
    unet.add_adapter(peft_config(cfg), adapter_name=ADAPTER)
    try:
        params = [p for n, p in unet.named_parameters() if f".{ADAPTER}." in n]
        for p in params:
            p.data = p.data.float()  # LoRA parameters in fp32, base stays in the pipeline dtype
            p.requires_grad_(False)
        if state is not None:
            _load_state(unet, state)
        else:
            gen = generator or torch.Generator().manual_seed(0)
            for name, p in unet.named_parameters():
                if f"lora_A.{ADAPTER}." in name:
                    p.data.copy_(torch.randn(p.shape, generator=gen) / cfg.rank)  # std 1/r (SPEC §2)
        yield params
    finally:
        if had_adapters:
            unet.delete_adapters(ADAPTER)
        else:
            unet.unload_lora()  # unwraps the peft layers: the base UNet is exactly as before


def _load_state(unet: Any, state: LoraState) -> None:
    """Load trained adapter weights; a ValueError if any key is unexpected, missing or of another shape."""
    from peft import set_peft_model_state_dict

    try:
        result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)
    except RuntimeError as exc:  # shape mismatch (e.g. another rank or another UNet)
        raise ValueError(f"LoRA weights do not fit this UNet: {str(exc).splitlines()[0]}") from None
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    missing = [k for k in getattr(result, "missing_keys", None) or [] if f".{ADAPTER}." in k]
    if unexpected or missing:
        raise ValueError(
            f"LoRA weights do not fit this UNet: unexpected {unexpected[:3]}, missing {missing[:3]}"
        )


def adapter_fits(unet: Any, cfg: LoraConfig, state: LoraState) -> bool:
    """Whether ``state`` loads into ``unet`` as an adapter of ``cfg`` (tried and removed again)."""
    try:
        with lora_adapter(unet, cfg, state):
            return True
    except ValueError as exc:
        logger.warning("%s", exc)
        return False


def adapter_state(unet: Any) -> LoraState:
    """The current identity adapter's weights as a CPU fp32 state dict."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}


def adapted_linears(unet: Any, cfg: LoraConfig) -> dict[str, torch.nn.Linear]:
    """The Linears peft adapts, in module order: every one whose name is, or ends in ``.`` + a target."""
    return {
        name: m
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear)
        and any(name == t or name.endswith("." + t) for t in cfg.target_modules)
    }


def lora_deltas(unet: Any, cfg: LoraConfig, state: LoraState) -> dict[str, Tensor]:
    """ΔW = s·B·A (fp32, on the UNet's device) per adapted Linear, s = α/r; a ValueError if ``state`` does not
    fit ``unet`` as an adapter of ``cfg`` (a key without its layer, a missing layer, a shape mismatch).

    Adapted layers are the ones peft targets (``adapted_linears``).
    """
    scale = cfg.scale_alpha / cfg.rank
    layers = adapted_linears(unet, cfg)
    want = {f"{name}.lora_{ab}.weight" for name in layers for ab in ("A", "B")}
    if set(state) != want:
        unexpected, missing = sorted(set(state) - want), sorted(want - set(state))
        raise ValueError(
            f"LoRA weights do not fit this UNet: unexpected {unexpected[:3]}, missing {missing[:3]}"
        )
    deltas: dict[str, Tensor] = {}
    for name, layer in layers.items():
        a, b = state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]  # (r, in), (out, r)
        if a.shape != (cfg.rank, layer.in_features) or b.shape != (layer.out_features, cfg.rank):
            raise ValueError(
                f"LoRA weights do not fit this UNet: {name} is {layer.out_features}x{layer.in_features}, "
                f"the adapter has A {tuple(a.shape)}, B {tuple(b.shape)}"
            )
        device = layer.weight.device
        deltas[name] = scale * (b.to(device, torch.float32) @ a.to(device, torch.float32))  # (out, in)
    return deltas


def deltas_fit(unet: Any, cfg: LoraConfig, state: LoraState) -> bool:
    """Whether ``state`` merges into ``unet`` as an adapter of ``cfg`` (``adapter_fits`` without peft)."""
    try:
        lora_deltas(unet, cfg, state)
        return True
    except ValueError as exc:
        logger.warning("%s", exc)
        return False


@contextmanager
def merged_lora(unet: Any, cfg: LoraConfig, state: LoraState) -> Iterator[None]:
    """The trained adapter merged into the weights (W ← W + s·B·A) for the ``with`` block (fast path).

    Computes what ``lora_adapter`` does (W x + s·B(A x)) without peft's side branch: one matmul per adapted
    layer instead of three plus casts, the difference being floating-point rounding (the sum is rounded to
    the weights' dtype). The original weight tensors are put back on exit, bit for bit.
    """
    deltas = lora_deltas(unet, cfg, state)
    saved: dict[str, Tensor] = {}
    try:
        for name, delta in deltas.items():
            weight = unet.get_submodule(name).weight
            saved[name] = weight.data
            weight.data = (weight.data.float() + delta).to(weight.dtype)
        yield
    finally:
        for name, data in saved.items():
            unet.get_submodule(name).weight.data = data


def _lora_branch(a: Tensor, b: Tensor, scale: float, module: Any, inputs: Any, output: Tensor) -> Tensor:
    """Forward hook: W x + s·B(A x), the branch in the input's dtype (A, B cast from their fp32 masters)."""
    x = inputs[0]
    return output + F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype)) * scale


@contextmanager
def hooked_lora(
    unet: Any, cfg: LoraConfig, generator: torch.Generator | None = None
) -> Iterator[dict[str, torch.nn.Parameter]]:
    """A fresh identity adapter as forward hooks on the adapted Linears, for training (the fast path).

    The same adapter ``lora_adapter`` adds (A ~ N(0, 1/r) drawn from ``generator`` in the same order, B = 0,
    fp32 parameters, y = W x + s·B(A x)), yielded as a dict keyed like peft's state dict
    (``<layer>.lora_A.weight``), without peft's wrappers. peft runs the branch in the parameters' fp32, so
    in a half-precision UNet without autocast every adapted layer casts its input up and its output down;
    here the branch runs in the input's dtype from half-precision copies of A and B (autocast does the
    same cast), and the gradients still reach the fp32 parameters. The hooks are removed on exit.
    """
    gen = generator or torch.Generator().manual_seed(0)
    scale = cfg.scale_alpha / cfg.rank
    params: dict[str, torch.nn.Parameter] = {}
    handles = []
    try:
        for name, layer in adapted_linears(unet, cfg).items():
            device = layer.weight.device
            a = torch.randn((cfg.rank, layer.in_features), generator=gen) / cfg.rank  # std 1/r (SPEC §2)
            a_p = torch.nn.Parameter(a.to(device))  # (r, in)
            b_p = torch.nn.Parameter(torch.zeros((layer.out_features, cfg.rank), device=device))  # (out, r)
            params[f"{name}.lora_A.weight"], params[f"{name}.lora_B.weight"] = a_p, b_p
            handles.append(layer.register_forward_hook(partial(_lora_branch, a_p, b_p, scale)))
        yield params
    finally:
        for handle in handles:
            handle.remove()


# --- training --------------------------------------------------------------------------------------------


def resize_short_side(pixels: Tensor, side: int) -> Tensor:
    """(1, 3, H, W) -> (1, 3, H', W') with min(H', W') = ``side``, aspect kept (bilinear, antialiased)."""
    _, _, h, w = pixels.shape
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)


def crop_offsets(big: Tensor, side: int, count: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``count`` independent random (top, left) corners of side x side crops of (1, 3, H, W)."""
    _, _, h, w = big.shape
    tops = torch.randint(0, h - side + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, w - side + 1, (count,), generator=generator).tolist()
    return list(zip(tops, lefts, strict=True))


def _crops(big: Tensor, side: int, offsets: list[tuple[int, int]]) -> Tensor:
    return torch.cat([big[:, :, t : t + side, s : s + side] for t, s in offsets])  # (B, 3, S, S)


class _CropEncoder:
    """VAE posteriors of crops; with ``share``, each distinct crop is encoded once per training run.

    A square image at the native size has a single crop, so the faithful recipe encodes the same picture
    4 x 80 times; sharing keeps every random draw (the posterior sample still draws its noise) and changes
    only the batch numerics of the encoder.
    """

    def __init__(self, vae: Any, pixels: Tensor, side: int, share: bool, chunk: int = 4) -> None:
        self.vae, self.pixels, self.side, self.share, self.chunk = vae, pixels, side, share, max(1, chunk)
        self._moments: dict[tuple[int, int], Tensor] = {}  # (top, left) -> (1, 2·4, h, w) mean ‖ logvar

    def posterior(self, offsets: list[tuple[int, int]]) -> Any:
        vae = self.vae
        if not self.share:
            batch = _crops(self.pixels, self.side, offsets).to(device=vae.device, dtype=vae.dtype)
            return vae.encode(batch).latent_dist
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        new = list(dict.fromkeys(o for o in offsets if o not in self._moments))
        for i in range(0, len(new), self.chunk):  # a bounded VAE batch, however many crops are new
            part = new[i : i + self.chunk]
            batch = _crops(self.pixels, self.side, part).to(device=vae.device, dtype=vae.dtype)
            moments = vae.encode(batch).latent_dist.parameters  # (len(part), 8, h, w)
            self._moments.update({o: m[None] for o, m in zip(part, moments, strict=True)})
        return DiagonalGaussianDistribution(torch.cat([self._moments[o] for o in offsets]))


def _draw_all(
    cfg: LoraConfig,
    pixels: Tensor,
    side: int,
    latent_shape: tuple[int, ...],
    vae_dtype: torch.dtype,
    t_max: int,
    gen: torch.Generator,
) -> tuple[list[list[tuple[int, int]]], Tensor, Tensor, Tensor]:
    """Every random draw of the training run, in the order a step-by-step loop makes them: per step the crop
    corners, the posterior sample's noise (in the VAE's dtype, as diffusers draws it), the diffusion noise ε
    and t. Drawn up front so the device gets three copies in all instead of three blocking copies a step.

    Returns (corners per step, (S, B, 4, h, w) posterior noise, (S, B, 4, h, w) ε, (S, B) t), on the CPU.
    """
    corners, post, noise, ts = [], [], [], []
    for _ in range(cfg.steps):
        corners.append(crop_offsets(pixels, side, cfg.batch_size, gen))
        post.append(torch.randn(latent_shape, generator=gen, dtype=vae_dtype))
        noise.append(torch.randn(latent_shape, generator=gen))
        ts.append(torch.randint(0, t_max, (cfg.batch_size,), generator=gen))
    if not corners:
        empty = torch.empty((0, *latent_shape))
        return corners, empty.to(vae_dtype), empty, torch.empty((0, cfg.batch_size), dtype=torch.long)
    return corners, torch.stack(post), torch.stack(noise), torch.stack(ts)


def train_lora(
    pipe: Any,
    image: Any,
    prompt: str,
    cfg: LoraConfig,
    side: int,
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
    share_encoding: bool = False,
    cuda_graphs: bool = False,
    hooked: bool = False,
) -> Generator[ProgressEvent, None, LoraState]:
    """Fit the identity LoRA to ``image`` (PIL, work size); yields one event per step, returns the weights.

    ``side`` is the crop size of the augmentations (the model's native size); ``seed`` (``EditConfig.seed``)
    seeds every random draw. ``share_encoding`` VAE-encodes each distinct crop once and prepares every
    step's batch up front in one go (the fast path: the same elementwise maths, batched).
    ``cuda_graphs`` (on CUDA) replays the step (forward, loss, backward, AdamW) as one CUDA graph, captured
    after one eager step; on CUDA AdamW is always the fused one, so both compute the same weights.
    ``hooked`` trains the adapter of ``hooked_lora`` (the branch in the UNet's dtype) instead of peft's.
    ``autocast_dtype`` None runs the UNet in its own dtype (the fast path's half-precision UNet on CUDA:
    no autocast, whose fp32 GroupNorm and casts cost 50.0 vs 44.2 ms a step on the H200: docs/performance.md).
    The adapter is removed again before this returns; install the returned weights with
    ``lora_adapter(unet, cfg, state)`` or ``merged_lora(unet, cfg, state)``.
    """
    unet = pipe.unet
    device = unet.device
    graphed = graphs_usable(device, cuda_graphs)
    gen = torch.Generator().manual_seed(seed)  # CPU generator: same draws on every device
    # the family's conditioning (SDXL: + pooled embedding and time ids of the crop size), batch B
    cond = text_conditioning(pipe, prompt, (side, side)).unet_kwargs(cfg.batch_size)
    unet.requires_grad_(False)
    adapter = hooked_lora(unet, cfg, generator=gen) if hooked else lora_adapter(unet, cfg, generator=gen)
    with adapter as installed:
        params = list(installed.values()) if isinstance(installed, dict) else installed
        for p in params:
            p.requires_grad_(True)
        # on CUDA the fused AdamW: a few kernels for all the adapter's tensors instead of hundreds (the
        # foreach one was 1/6 of a step's GPU time: benchmarks/profile_gpu.py); its step count lives on the
        # device (capturable), so it runs the same in a CUDA graph as eagerly
        on_cuda = device.type == "cuda"
        opt = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=on_cuda, capturable=on_cuda
        )

        def train_step(noisy: Tensor, t: Tensor, target: Tensor) -> Tensor:
            """One optimiser step on a batch; returns the loss (0-dim, on the device)."""
            amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
            with amp:
                pred = unet(noisy.to(unet.dtype) if autocast_dtype is None else noisy, t, **cond).sample
            loss = F.mse_loss(pred.float(), target.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        batches = _training_batches(pipe, image, cfg, side, gen, share_encoding)
        pending: Tensor | None = None  # the previous step's loss, read once the next step is queued
        captured: CapturedStep | None = None
        inputs: tuple[Tensor, ...] = ()  # the graph's static (noisy, t, target)
        for step, (noisy, t, target) in enumerate(batches):
            if not graphed:
                loss = train_step(noisy, t, target)
            elif step < max(WARMUP_STEPS, 1):  # at least one: it creates AdamW's state, which a capture
                # would record as kernels (zeroing the moments at every replay) rather than run once
                loss = on_side_stream(lambda: train_step(noisy, t, target))  # noqa: B023 (called now)
            else:
                if captured is None:
                    inputs = (noisy.clone(), t.clone(), target.clone())
                    opt.zero_grad(set_to_none=True)  # the graph allocates its own gradients
                    captured = try_capture(partial(train_step, *inputs), "LoRA training step")
                else:
                    for static, value in zip(inputs, (noisy, t, target), strict=True):
                        static.copy_(value)
                if captured is None:  # out of GPU memory for the graph: the remaining steps run eagerly
                    graphed = False
                    loss = train_step(noisy, t, target)
                else:
                    loss = captured().clone()
            if pending is not None:
                yield ProgressEvent(phase="lora", step=step, total=cfg.steps, loss=float(pending))
            pending = loss
        if pending is not None:
            yield ProgressEvent(phase="lora", step=cfg.steps, total=cfg.steps, loss=float(pending))
        del captured, inputs
        if isinstance(installed, dict):
            state = {k: v.detach().float().cpu().clone() for k, v in installed.items()}
        else:
            state = adapter_state(unet)
    unet.requires_grad_(False)
    return state


def _training_batches(
    pipe: Any, image: Any, cfg: LoraConfig, side: int, gen: torch.Generator, share: bool
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Every step's (noisy latents x_t, t, target) (B, 4, h, w), (B,), (B, 4, h, w), in step order.

    x_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε with z_0 a VAE posterior sample × scaling factor; target ε (or v). With
    ``share`` (crops encoded once) all steps are prepared at once before the first is yielded: the same
    elementwise maths over (S·B, 4, h, w), so between replays the host only copies a batch into the graph's
    inputs; otherwise step by step.
    """
    vae, scheduler = pipe.vae, pipe.scheduler
    device = pipe.unet.device
    pixels = resize_short_side(image_to_tensor(image), side)  # (1, 3, H', W') in [-1, 1]
    encoder = _CropEncoder(vae, pixels, side, share, cfg.batch_size)
    t_max = scheduler.config.num_train_timesteps
    epsilon = scheduler.config.prediction_type == "epsilon"
    lat = side // pipe.vae_scale_factor
    latent_shape = (cfg.batch_size, vae.config.latent_channels, lat, lat)  # (B, 4, h, w)
    corners, post, noise, ts = _draw_all(cfg, pixels, side, latent_shape, vae.dtype, t_max, gen)
    posterior_noise, noises, timesteps = (x.to(device) for x in (post, noise, ts))  # one copy each

    def batch(
        offsets: list[tuple[int, int]], post_noise: Tensor, eps: Tensor, t: Tensor
    ) -> tuple[Tensor, ...]:
        with torch.no_grad():
            posterior = encoder.posterior(offsets)
            z0 = (posterior.mean + posterior.std * post_noise).float()  # posterior sample
            z0 = z0 * vae.config.scaling_factor  # (B, 4, h, w)
            noisy = scheduler.add_noise(z0, eps, t)
            return noisy, t, eps if epsilon else scheduler.get_velocity(z0, eps, t)

    if not share or cfg.steps == 0:
        for step in range(cfg.steps):
            yield batch(corners[step], posterior_noise[step], noises[step], timesteps[step])  # type: ignore[misc]
        return
    flat = [o for step in corners for o in step]  # S·B corners
    noisy, t, target = batch(
        flat, posterior_noise.flatten(0, 1), noises.flatten(0, 1), timesteps.flatten()
    )  # (S·B, 4, h, w), (S·B,), (S·B, 4, h, w)
    b = cfg.batch_size
    for step in range(cfg.steps):
        yield (
            noisy[step * b : (step + 1) * b],
            t[step * b : (step + 1) * b],
            target[step * b : (step + 1) * b],
        )


# --- caching ---------------------------------------------------------------------------------------------


class LoraCache:
    """Trained adapters by key: an in-memory LRU in front of a directory of diffusers-format LoRA folders."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        capacity: int = 8,
        pipeline_class: str = "StableDiffusionPipeline",
    ) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.capacity = capacity
        self.pipeline_class = pipeline_class  # whose diffusers LoRA format the files are written in
        self._memory: OrderedDict[str, LoraState] = OrderedDict()

    def path(self, key: str) -> Path:
        return self.directory / key

    def get(self, key: str) -> LoraState | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        file = self.path(key) / WEIGHT_NAME
        if not file.is_file():
            return None
        state = load_lora_file(file)
        if state is None:
            return None
        self._remember(key, state)
        return state

    def put(self, key: str, state: LoraState, cfg: LoraConfig) -> None:
        self._remember(key, state)
        try:
            save_lora(self.path(key), state, cfg, self.pipeline_class)
        except OSError as exc:  # an unwritable cache must not fail the edit
            logger.warning("could not write the LoRA cache at %s: %s", self.path(key), exc)

    def discard(self, key: str) -> None:
        """Forget an entry (memory and disk), e.g. one that does not fit the model it was keyed for."""
        self._memory.pop(key, None)
        shutil.rmtree(self.path(key), ignore_errors=True)

    def _remember(self, key: str, state: LoraState) -> None:
        self._memory[key] = state
        self._memory.move_to_end(key)
        while len(self._memory) > self.capacity:
            self._memory.popitem(last=False)


def save_lora(
    directory: Path, state: LoraState, cfg: LoraConfig, pipeline_class: str = "StableDiffusionPipeline"
) -> Path:
    """Write ``state`` in diffusers' LoRA format into ``directory`` (atomically: temp folder + rename).

    ``pipeline_class`` (the model family's, ``Family.pipeline_class``) writes it, so that pipeline's
    ``load_lora_weights(directory)`` loads it: ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``.
    """
    import diffusers

    writer = getattr(diffusers, pipeline_class)

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        metadata = peft_config(cfg).to_dict()
        writer.save_lora_weights(
            tmp, unet_lora_layers=state, weight_name=WEIGHT_NAME, unet_lora_adapter_metadata=metadata
        )
        (tmp / "dragdiff_lora.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        if directory.exists():  # another process wrote the same key: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_lora_file(file: Path) -> LoraState | None:
    """Read a saved adapter back (keys without diffusers' ``unet.`` prefix); None if unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        raw = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        logger.warning("ignoring unreadable cached LoRA %s: %s", file, exc)
        return None
    return {k.removeprefix("unet."): v.float() for k, v in raw.items()}
