"""One UNet call for every phase of an edit, with classifier-free guidance as a branch (SPEC §3–§6).

Notation: c the prompt embedding, ∅ the unconditional (negative-prompt) embedding, g the guidance scale.
With guidance the batch is doubled as [z ; z] with embeddings [∅ ; c] and ε = ε_∅ + g (ε_c − ε_∅). Reference
control then sees pairs in the order [uncond_src, uncond_edit, cond_src, cond_edit] (``diffusion.attention``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of the UNet: c, optionally ∅ and g > 1 for classifier-free guidance."""

    cond: Tensor  # (1, L, D)
    uncond: Tensor | None = None  # (1, L, D); used only when guidance > 1
    guidance: float = 1.0

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


def unet_eps(unet: Any, z: Tensor, t: int, cond: Conditioning, amp: torch.dtype | None = None) -> Tensor:
    """ε (B, 4, h, w) in fp32 for latents z at timestep t, guidance-combined when ``cond.cfg``.

    ``amp`` runs the UNet under autocast in that dtype (e.g. fp16 on CUDA); None casts z to the UNet's dtype.
    """
    b = z.shape[0]
    x = torch.cat([z, z]) if cond.cfg else z  # (B or 2B, 4, h, w)
    ctx = torch.autocast(z.device.type, dtype=amp) if amp is not None else nullcontext()
    with ctx:
        out = unet(x if amp is not None else x.to(unet.dtype), t, cond.embeddings(b).to(x.device)).sample
    out = out.float()
    if not cond.cfg:
        return out
    eps_u, eps_c = out.chunk(2)  # (B, 4, h, w) each
    return eps_u + cond.guidance * (eps_c - eps_u)


def combine_features(features: Tensor, cond: Conditioning) -> Tensor:
    """Motion-supervision features; with guidance [(1−w) F_∅, w F_c] along channels, w = g/(2g−1) (§6)."""
    if not cond.cfg:
        return features
    g = cond.guidance
    w = g / (2 * g - 1)
    f_u, f_c = features.chunk(2)  # (B, C, h, w) each
    return torch.cat([(1 - w) * f_u, w * f_c], dim=1)  # (B, 2C, h, w)
