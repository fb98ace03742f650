"""Text-to-image generation that keeps every intermediate latent (generated-image mode, SPEC §6).

DDIM (SPEC §3's scheduler), 50 steps, classifier-free guidance 7.5 with an optional negative prompt, seeded
with a CPU ``torch.Generator`` so the same seed gives the same image on every device. ``latents[i]`` is the
latent *entering* denoising step i (noise level ``timesteps[i]``); ``latents[-1]`` is the final clean latent.
A drag in generated-image mode starts from ``latents[num_steps - inverted_steps]`` (t = 681 for SD-1.5).

``save_generated`` / ``load_generated`` store the latents and the settings in one ``.safetensors`` file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dragdiff.config import GenerateConfig
from dragdiff.diffusion.inversion import decode_latents, tensor_to_pil
from dragdiff.diffusion.loading import model_identity, native_size, size_multiple
from dragdiff.diffusion.unet import text_conditioning, unet_eps
from dragdiff.io import atomic_path
from dragdiff.types import InputError


@dataclass
class GeneratedImage:
    """An image generated with every intermediate latent kept, ready for a generated-image-mode drag."""

    image: Any  # PIL image, the decoded final latent
    latents: Tensor  # (S + 1, 4, h, w) CPU fp32: latents[i] enters step i, latents[S] is the clean latent
    prompt: str
    negative_prompt: str
    guidance_scale: float
    timesteps: tuple[int, ...]  # (S,) noisiest first, e.g. 981, 961, …, 1
    seed: int = 0
    model_id: str = ""

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


@torch.no_grad()
def generate(pipe: Any, prompt: str, config: GenerateConfig | None = None) -> GeneratedImage:
    """Generate an image from ``prompt`` with DDIM + CFG, keeping every latent (SPEC §6)."""
    config = config or GenerateConfig()
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    native, multiple = native_size(pipe), size_multiple(pipe)
    width, height = config.width or native, config.height or native
    for name, side in (("width", width), ("height", height)):
        if side % multiple:
            raise InputError(f"generate.{name} must be a multiple of {multiple} for this model, got {side}")
    unet, scheduler = pipe.unet, pipe.scheduler
    f = pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(config.seed)
    z = torch.randn((1, unet.config.in_channels, height // f, width // f), generator=gen)  # (1, 4, h, w)
    z = (z * scheduler.init_noise_sigma).to(unet.device)
    cond = text_conditioning(pipe, prompt, (height, width), config.negative_prompt, config.guidance_scale)
    amp = unet.dtype if unet.device.type == "cuda" and unet.dtype != torch.float32 else None
    scheduler.set_timesteps(config.num_steps)
    timesteps = tuple(int(t) for t in scheduler.timesteps)
    kept = [z.float().cpu()]
    for t in timesteps:
        eps = unet_eps(unet, z, t, cond, amp)
        z = scheduler.step(eps, t, z.float()).prev_sample
        kept.append(z.float().cpu())
    image = tensor_to_pil(decode_latents(pipe, z))[0]
    return GeneratedImage(
        image=image,
        latents=torch.cat(kept),  # (S + 1, 4, h, w)
        prompt=prompt,
        negative_prompt=config.negative_prompt,
        guidance_scale=config.guidance_scale,
        timesteps=timesteps,
        seed=config.seed,
        model_id=model_identity(pipe),
    )


def save_generated(gen: GeneratedImage, path: str | os.PathLike[str]) -> Path:
    """Write the latents and settings of ``gen`` to one ``.safetensors`` file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "prompt": gen.prompt,
        "negative_prompt": gen.negative_prompt,
        "guidance_scale": repr(gen.guidance_scale),
        "timesteps": json.dumps(list(gen.timesteps)),
        "seed": str(gen.seed),
        "model_id": gen.model_id,
        "format": "dragdiff-generated/1",
    }
    with atomic_path(path) as tmp:  # a plain file's mode; no temporary file left on failure
        save_file({"latents": gen.latents.contiguous()}, str(tmp), metadata=meta)
    return path


def load_generated(path: str | os.PathLike[str], image: Any) -> GeneratedImage:
    """Read a file written by ``save_generated``; ``image`` is the generated picture (PIL)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            latents = f.get_tensor("latents")
    except (OSError, SafetensorError) as exc:
        raise InputError(f"cannot read generated latents {str(path)!r}: {exc}") from None
    except KeyError:
        raise InputError(
            f"{str(path)!r} holds no 'latents' tensor (not written by dragdiff generate)"
        ) from None
    if meta.get("format") != "dragdiff-generated/1":
        raise InputError(
            f"{str(path)!r} was not written by dragdiff generate (format {meta.get('format')!r})"
        )
    timesteps = tuple(json.loads(meta["timesteps"]))
    if latents.dim() != 4 or latents.shape[0] != len(timesteps) + 1:
        raise InputError(
            f"{str(path)!r}: latents of shape {tuple(latents.shape)} do not fit {len(timesteps)} steps"
        )
    return GeneratedImage(
        image=image,
        latents=latents.float(),
        prompt=meta.get("prompt", ""),
        negative_prompt=meta.get("negative_prompt", ""),
        guidance_scale=float(meta.get("guidance_scale", "7.5")),
        timesteps=timesteps,
        seed=int(meta.get("seed", "0")),
        model_id=meta.get("model_id", ""),
    )
