"""Scheduler construction, text embeddings, VAE encoding and DDIM inversion (paper §3.1; SPEC §3).

Notation: ᾱ_t = ``scheduler.alphas_cumprod[t]`` (``final_alpha_cumprod`` below t = 0); z_0 the clean
latent (VAE posterior mean × ``scaling_factor``); z_t the latent at timestep t. A DDIM inversion step moves z
from the less noisy level t_prev = t − T/S to t, predicting ε on the *current* latent with the *target* t:
    ε = ε_θ(z_{t_prev}, t, c);   x̂_0 = (z_{t_prev} − √(1−ᾱ_{t_prev}) ε) / √ᾱ_{t_prev}
    z_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε
For SD-1.5 with 50 steps and strength 0.7 this visits t = 1, 21, …, 681 and returns z_681.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dragdiff.diffusion.family import family_of
from dragdiff.ops import ddim_transfer

# SPEC §3: DDIM without clipping, ᾱ_final = ᾱ_0 ("set_alpha_to_one=False"), offset 1, leading spacing.
# The betas and the prediction type are the model's own (SD-1.5: scaled_linear 0.00085–0.012, 1000 steps).
DDIM_SETTINGS: dict[str, Any] = dict(
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"
)

EpsFn = Callable[[Tensor, int], Tensor]  # (latent, timestep) -> ε prediction, same shape as the latent


def ddim_scheduler(scheduler_config: Any) -> Any:
    """A ``DDIMScheduler`` from the model's scheduler config with SPEC §3's settings."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config, **DDIM_SETTINGS)


def alpha_at(scheduler: Any, t: int) -> Tensor:
    """ᾱ_t as a 0-dim fp64 tensor; ``final_alpha_cumprod`` for t < 0 (as diffusers' DDIM step does)."""
    a = scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod
    return torch.as_tensor(a, dtype=torch.float64)


def previous_timestep(scheduler: Any, t: int) -> int:
    """The less-noisy timestep DDIM steps to from t (diffusers' rule: t − T // num_inference_steps)."""
    return int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


def denoise_timesteps(scheduler: Any, num_steps: int, inverted_steps: int) -> list[int]:
    """The last ``inverted_steps`` of the ``num_steps`` DDIM schedule, noisiest first (681, 661, …, 1)."""
    scheduler.set_timesteps(num_steps)
    return [int(t) for t in scheduler.timesteps[num_steps - inverted_steps :]]


@torch.no_grad()
def encode_text(pipe: Any, prompt: str) -> tuple[Tensor, Tensor | None]:
    """(text embeddings (1, L, D), pooled embedding (1, P) or None), padded to ``tokenizer.model_max_length``.

    SD-1.x/2.x: the text encoder's last hidden state, no pooled embedding (SD's convention). SDXL: diffusers'
    own ``encode_prompt`` (both encoders' penultimate hidden states concatenated, the second's pooled
    projection), on the UNet's device.
    """
    if family_of(pipe).pooled:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt, device=pipe.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return embeds, pooled  # (1, L, D1 + D2), (1, P)
    tok = pipe.tokenizer
    ids = tok(
        prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids  # (1, L)
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0], None  # (1, L, D)


def encode_prompt(pipe: Any, prompt: str) -> Tensor:
    """Text embeddings (1, L, D) of ``prompt`` (``encode_text`` without the pooled embedding)."""
    return encode_text(pipe, prompt)[0]


def image_to_tensor(image: Any, like: Tensor | None = None) -> Tensor:
    """PIL RGB image -> (1, 3, H, W) float in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return t if like is None else t.to(like)


@torch.no_grad()
def encode_image(pipe: Any, pixels: Tensor) -> Tensor:
    """z_0 = VAE posterior **mean** × scaling_factor for (B, 3, H, W) pixels in [-1, 1] (SPEC §3); fp32."""
    vae = pipe.vae
    posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return posterior.mean.float() * vae.config.scaling_factor  # (B, 4, H/f, W/f)


@torch.no_grad()
def decode_latents(pipe: Any, latents: Tensor) -> Tensor:
    """(B, 4, h, w) latents -> (B, 3, H, W) images in [0, 1] (divide by scaling_factor, clamp)."""
    vae = pipe.vae
    x = vae.decode(latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


def tensor_to_pil(images: Tensor) -> list[Any]:
    """(B, 3, H, W) in [0, 1] -> list of PIL RGB images."""
    from PIL import Image

    arr = (images.detach().permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)  # (B, H, W, 3)
    return [Image.fromarray(a, "RGB") for a in arr]


@dataclass(frozen=True)
class Inversion:
    """The result of DDIM inversion: z_t and its timestep, plus the schedule that denoises it back."""

    latents: Tensor  # (1, 4, h, w) z_t, fp32
    timestep: int  # t, e.g. 681
    denoise_timesteps: tuple[int, ...]  # t, t − T/S, …, 1


def invert_steps(
    scheduler: Any, z0: Tensor, eps_fn: EpsFn, num_steps: int, inverted_steps: int
) -> Generator[int, None, tuple[Inversion, list[Tensor]]]:
    """DDIM-invert z_0 for ``inverted_steps`` of a ``num_steps`` schedule; yields the step number after each.

    Returns the Inversion and the visited latents z_0, z_1, …, z_t. ``eps_fn(z, t)`` predicts ε (already
    guidance-combined, if any) for the latent z at timestep t.
    """
    steps = denoise_timesteps(scheduler, num_steps, inverted_steps)  # [681, …, 1]
    pred_type = scheduler.config.prediction_type
    z = z0.float()
    visited = [z]
    for i, t in enumerate(reversed(steps)):  # 1, 21, …, 681
        a_from = alpha_at(scheduler, previous_timestep(scheduler, t))
        a_to = alpha_at(scheduler, t)
        with torch.no_grad():
            z = ddim_transfer(z, eps_fn(z, t), a_from.item(), a_to.item(), pred_type).float()
        visited.append(z)
        yield i + 1
    return Inversion(latents=z, timestep=steps[0], denoise_timesteps=tuple(steps)), visited


def invert(
    scheduler: Any, z0: Tensor, eps_fn: EpsFn, num_steps: int, inverted_steps: int
) -> tuple[Inversion, list[Tensor]]:
    """``invert_steps`` run to the end: (Inversion, visited latents)."""
    run = invert_steps(scheduler, z0, eps_fn, num_steps, inverted_steps)
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value
