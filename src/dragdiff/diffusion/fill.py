"""Repaint what a warp uncovered with the loaded model: blended-latent denoising from a partial inversion.

Works with any SD-1.x, SD-2.x or SDXL text-to-image pipeline (Avrahami et al., "Blended Latent Diffusion",
2023):

    x          the warped picture with its hole pre-filled classically (``geometry.warp.background_plate``)
    z_0        VAE posterior mean × scaling factor of x at the model's work size
    z_0 … z_t  DDIM inversion of z_0 for round(strength · num_steps) steps (deterministic, as SPEC §3's)
    denoise    DDIM back from z_t; after every step the latents outside the hole m are replaced by the
               inversion's own latent of that timestep:  z ← m ⊙ z + (1 − m) ⊙ z_known
    decode     the model's pixels are used only inside the hole (the caller composites them)

An inpainting UNet (9 input channels: latent, mask, masked-image latent) is run as such instead, from z_t.
The fill prompt should not name the moved object (METHODS.md: with the scene's prompt the model paints the
object back into the hole it left); the default is the empty prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dragdiff.diffusion.inversion import (
    decode_latents,
    denoise_timesteps,
    encode_image,
    invert_steps,
)
from dragdiff.diffusion.unet import text_conditioning, unet_eps


@dataclass(frozen=True)
class FillSettings:
    """How the hole is repainted (defaults: ``config.WarpConfig``)."""

    num_steps: int = 20
    strength: float = 0.5
    prompt: str = ""


def latent_hole(hole: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """(1, 1, h, w) float: a latent cell is repainted if any pixel of the hole falls in it."""
    return (F.adaptive_max_pool2d(hole.float()[None, None], latent_hw) > 0).float()


def blended_fill(
    pipe: Any,
    pixels: Tensor,
    hole: Tensor,
    settings: FillSettings,
    amp: torch.dtype | None = None,
    eps_wrap: Callable[[Callable[..., Tensor], tuple[Any, ...]], Callable[..., Tensor]] | None = None,
) -> Generator[int, None, Tensor]:
    """Repaint ``hole`` of ``pixels``; yields a step counter; returns (1, 3, H, W) in [0, 1] at work size.

    ``pixels`` (1, 3, H, W) in [-1, 1] at the model's work size; ``hole`` (H, W) bool. ``eps_wrap(fn, tag)``
    may wrap the UNet call (e.g. in a CUDA graph).
    """
    unet, sched = pipe.unet, pipe.scheduler
    cond = text_conditioning(pipe, settings.prompt, (int(pixels.shape[-2]), int(pixels.shape[-1])))
    z0 = encode_image(pipe, pixels)  # (1, 4, h, w)
    m = latent_hole(hole.to(z0.device), (int(z0.shape[-2]), int(z0.shape[-1])))  # (1, 1, h, w)
    n_inv = max(1, round(settings.strength * settings.num_steps))
    inpainting = unet.config.in_channels == 9
    extra = _inpaint_inputs(pipe, pixels, hole, m) if inpainting else None

    def eps(z: Tensor, t: int | Tensor) -> Tensor:
        x = z if extra is None else torch.cat([z, extra], dim=1)  # (1, 9, h, w) for an inpainting UNet
        return unet_eps(unet, x, t, cond, amp)

    eps_fn = eps_wrap(eps, ("fill", id(unet), amp, inpainting)) if eps_wrap is not None else eps
    run = invert_steps(sched, z0, eps_fn, settings.num_steps, n_inv)
    step = 0
    while True:
        try:
            next(run)
            step += 1
            yield step
        except StopIteration as done:
            inversion, visited = done.value
            break
    steps = denoise_timesteps(sched, settings.num_steps, n_inv)  # noisiest first
    z = inversion.latents
    with torch.no_grad():
        for i, t in enumerate(steps):
            z = sched.step(eps_fn(z, t), t, z).prev_sample
            known = visited[len(steps) - 1 - i]  # the inversion's latent at the timestep stepped to
            z = m * z + (1 - m) * known
            step += 1
            yield step
    return decode_latents(pipe, z)


def _inpaint_inputs(pipe: Any, pixels: Tensor, hole: Tensor, m: Tensor) -> Tensor:
    """(1, 5, h, w) [mask, masked-image latent] as an SD inpainting UNet takes them."""
    keep = (~hole.to(pixels.device)).to(pixels.dtype)[None, None]  # (1, 1, H, W)
    masked = encode_image(pipe, pixels * keep)  # (1, 4, h, w)
    return torch.cat([m.to(masked), masked], dim=1)


def paste_hole(base: np.ndarray, generated: np.ndarray, hole: np.ndarray, feather: int = 1) -> np.ndarray:
    """``generated`` inside ``hole`` over ``base`` (uint8 (H, W, 3)), with a ``feather``-px soft inner edge;
    pixels outside the hole stay ``base``'s exactly."""
    import cv2

    alpha = hole.astype(np.float32)
    if feather > 0:
        k = 2 * feather + 1
        alpha = cv2.blur(alpha, (k, k)) * hole  # soft towards the hole's edge, zero outside it
        alpha = np.clip(alpha * (k * k) / max(k * k - k, 1), 0, 1) * hole
    out = base.astype(np.float32) * (1 - alpha[..., None]) + generated.astype(np.float32) * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
