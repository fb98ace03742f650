"""One UNet call for every phase of an edit, with classifier-free guidance as a branch (SPEC §3–§6).

Notation: c the prompt embedding, ∅ the unconditional (negative-prompt) embedding, g the guidance scale.
With guidance the batch is doubled as [z ; z] with embeddings [∅ ; c] and ε = ε_∅ + g (ε_c − ε_∅). Reference
control then sees pairs in the order [uncond_src, uncond_edit, cond_src, cond_edit] (``diffusion.attention``).
"ε" is the UNet's output: a v-prediction model's v combines the same way (guidance is linear), and the
callers convert it with the scheduler's ``prediction_type``.

Every UNet call of an edit (inversion, features and ε for motion supervision, denoising, the warp's fill,
generation, LoRA training) takes its conditioning from ``Conditioning.unet_kwargs``: the text embeddings and,
for SDXL (``diffusion.family``), ``added_cond_kwargs``: the pooled text embedding and six size "time ids".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dragdiff.diffusion.family import family_of
from dragdiff.diffusion.features import up_block_output
from dragdiff.diffusion.inversion import encode_text


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of the UNet: c, optionally ∅ and g > 1 for classifier-free guidance; for SDXL also
    the pooled embeddings and the size "time ids" (``added_cond_kwargs``). Tensors live on the UNet's
    device."""

    cond: Tensor  # (1, L, D)
    uncond: Tensor | None = None  # (1, L, D); used only when guidance > 1
    guidance: float = 1.0
    pooled: Tensor | None = None  # (1, P) SDXL: pooled text embedding of c
    uncond_pooled: Tensor | None = None  # (1, P) SDXL: pooled embedding of ∅
    time_ids: Tensor | None = None  # (1, 6) SDXL: (H, W, top, left, H, W) of the work size

    @property
    def cfg(self) -> bool:
        return self.uncond is not None and self.guidance > 1.0

    def embeddings(self, batch: int) -> Tensor:
        """(B, L, D) or, with guidance, (2B, L, D) as [∅ × B ; c × B]."""
        c = self.cond.expand(batch, -1, -1)
        if not self.cfg:
            return c
        assert self.uncond is not None
        return torch.cat([self.uncond.expand(batch, -1, -1), c])

    def unet_kwargs(self, batch: int, device: torch.device | None = None) -> dict[str, Any]:
        """The UNet's conditioning arguments for ``batch`` latents (2 x ``batch`` rows with guidance)."""
        hidden = self.embeddings(batch)
        kwargs: dict[str, Any] = {"encoder_hidden_states": hidden if device is None else hidden.to(device)}
        if self.pooled is None:
            return kwargs
        assert self.time_ids is not None
        pooled = self.pooled.expand(batch, -1)  # (B, P)
        if self.cfg:
            assert self.uncond_pooled is not None
            pooled = torch.cat([self.uncond_pooled.expand(batch, -1), pooled])  # (2B, P) [∅ ; c]
        rows = pooled.shape[0]
        kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self.time_ids.expand(rows, -1)}
        return kwargs


def text_conditioning(
    pipe: Any, prompt: str, size_hw: tuple[int, int], negative: str | None = None, guidance: float = 1.0
) -> Conditioning:
    """The ``Conditioning`` of ``prompt`` (and ``negative`` as ∅ when given) for images of ``size_hw`` (H, W).

    SDXL: pooled embeddings from the second text encoder and time ids (H, W, 0, 0, H, W): original size, crop
    corner and target size, as ``StableDiffusionXLPipeline`` builds them for an uncropped image. An empty
    negative prompt is zeros when the pipeline says ``force_zeros_for_empty_prompt``: what
    ``StableDiffusionXLPipeline`` does without a negative prompt (SDXL base's rule).
    """
    cond, pooled = encode_text(pipe, prompt)
    uncond = uncond_pooled = None
    if negative is not None:
        uncond, uncond_pooled = encode_text(pipe, negative)
        if negative == "" and pooled is not None and pipe.config.get("force_zeros_for_empty_prompt", False):
            uncond = torch.zeros_like(uncond)
            uncond_pooled = torch.zeros_like(uncond_pooled) if uncond_pooled is not None else None
    if not family_of(pipe).pooled:
        return Conditioning(cond, uncond, guidance)
    h, w = (int(v) for v in size_hw)
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=cond.device)  # (1, 6)
    return Conditioning(cond, uncond, guidance, pooled, uncond_pooled, time_ids)


def unet_eps(
    unet: Any, z: Tensor, t: int | Tensor, cond: Conditioning, amp: torch.dtype | None = None
) -> Tensor:
    """ε (B, 4, h, w) in fp32 for latents z at timestep t, guidance-combined when ``cond.cfg``.

    ``t`` is an int or a 0-dim integer tensor on the device (as a CUDA graph needs it). ``amp`` runs the UNet
    under autocast in that dtype (e.g. fp16 on CUDA); None casts z to the UNet's dtype.
    """
    x, ctx = _unet_input(unet, z, cond, amp)  # (B or 2B, 4, h, w)
    with ctx:
        out = unet(x, t, **cond.unet_kwargs(z.shape[0], x.device)).sample
    out = out.float()
    if not cond.cfg:
        return out
    eps_u, eps_c = out.chunk(2)  # (B, 4, h, w) each
    return eps_u + cond.guidance * (eps_c - eps_u)


def unet_features(
    unet: Any, z: Tensor, t: int | Tensor, cond: Conditioning, index: int, amp: torch.dtype | None = None
) -> Tensor:
    """``unet.up_blocks[index]``'s output (B or 2B, C, h, w) from a forward that stops there (no ε).

    The same tensor a hook on that block sees in ``unet_eps``'s forward (the batch doubled with guidance);
    pass it to ``combine_features``.
    """
    x, ctx = _unet_input(unet, z, cond, amp)
    with ctx:
        return up_block_output(unet, index, x, t, **cond.unet_kwargs(z.shape[0], x.device))


def _unet_input(unet: Any, z: Tensor, cond: Conditioning, amp: torch.dtype | None) -> tuple[Tensor, Any]:
    """The UNet's input batch ([z; z] with guidance) and the autocast context of the call."""
    x = torch.cat([z, z]) if cond.cfg else z  # (B or 2B, 4, h, w)
    if amp is None:
        return x.to(unet.dtype), nullcontext()
    return x, torch.autocast(z.device.type, dtype=amp)


def combine_features(features: Tensor, cond: Conditioning) -> Tensor:
    """Motion-supervision features; with guidance [(1−w) F_∅, w F_c] along channels, w = g/(2g−1) (§6)."""
    if not cond.cfg:
        return features
    g = cond.guidance
    w = g / (2 * g - 1)
    f_u, f_c = features.chunk(2)  # (B, C, h, w) each
    return torch.cat([(1 - w) * f_u, w * f_c], dim=1)  # (B, 2C, h, w)


@contextmanager
def channels_last(unet: Any, enabled: bool = True) -> Iterator[None]:
    """The UNet's convolution weights in channels-last layout for the ``with`` block (cuDNN's fast layout on
    CUDA; the same maths up to the convolution algorithm chosen), back to contiguous on exit."""
    if not enabled:
        yield
        return
    unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        unet.to(memory_format=torch.contiguous_format)
