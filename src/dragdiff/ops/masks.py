"""The editable-region mask and the mask term of the latent optimisation (paper §3.3; SPEC §4).

Paper notation: M the editable mask (1 = may change) nearest-resized to latent size; ẑ_{t-1} the deterministic
DDIM step from the current latent, z_{t-1} the same from the un-optimised latent; λ its weight.
    L_mask = λ · Σ ||(ẑ_{t-1} - z_{t-1}) ⊙ (1 - M)||_1      (a sum over all latent elements)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_mask(mask: Tensor, size_hw: tuple[int, int], *, dtype: torch.dtype | None = None) -> Tensor:
    """(H, W) bool or 0/1 mask -> (1, 1, h, w) float M at ``size_hw``, nearest neighbour."""
    m = torch.as_tensor(mask)
    if m.dim() != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(m.shape)}")
    m = m.to(dtype or torch.get_default_dtype())[None, None]  # (1, 1, H, W)
    return F.interpolate(m, size=tuple(size_hw), mode="nearest")  # (1, 1, h, w)


def mask_term(x_prev: Tensor, x_prev_ref: Tensor, mask: Tensor, lam: float) -> Tensor:
    """λ · Σ |ẑ_{t-1} - z_{t-1}| ⊙ (1 - M): the unmasked region must keep its denoised latent (0-dim tensor).

    ``x_prev_ref`` is a constant target (detached); ``mask`` broadcasts against the latent, e.g. (1, 1, h, w).
    """
    keep = 1 - mask.to(device=x_prev.device, dtype=x_prev.dtype)  # (1, 1, h, w)
    return lam * ((x_prev - x_prev_ref.detach()).abs() * keep).sum()
