"""Motion supervision (paper Eq. 3) and the stop rule.

Paper notation: h_i handle, g_i target (grid (row, col)); d_i = (g_i - h_i)/||g_i - h_i||;
F_q(ẑ_t) the feature at q; Ω(h_i, r_m) the (2r_m+1)² square around h_i; sg(·) stop-gradient.
    L_ms = Σ_i Σ_{q ∈ Ω(h_i, r_m)} ||F_{q+d_i}(ẑ_t) - sg(F_q(ẑ_t))||_1
As in the reference implementation, the inner sum is written as (2r_m+1)² × the mean absolute difference over
channels and patch pixels (λ of the mask term is tuned to this scaling).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dragdiff.ops.patches import sample_patches


def reached(handles: Tensor, targets: Tensor, threshold: float) -> Tensor:
    """(N,) bool: ||h_i - g_i||_2 < threshold (the stop rule of SPEC §4)."""
    return torch.linalg.vector_norm(targets - handles, dim=-1) < threshold


def motion_loss(
    features: Tensor, handles: Tensor, targets: Tensor, r_m: int, active: Tensor | None = None
) -> Tensor:
    """L_ms of Eq. 3 summed over active pairs (all pairs when ``active`` is None); a 0-dim tensor.

    Gradients reach ``features`` only through the shifted patch F_{q+d_i}; the source patch is detached.
    A pair with h_i == g_i has d_i = 0 and contributes 0.
    """
    h = handles.to(features.dtype)
    delta = targets.to(features.dtype) - h  # (N, 2)
    norm = torch.linalg.vector_norm(delta, dim=-1, keepdim=True)  # (N, 1)
    d = delta / norm.clamp_min(torch.finfo(features.dtype).tiny)  # (N, 2) unit direction d_i
    src = sample_patches(features.detach(), h, r_m)  # (N, C, P, P) sg(F_q)
    dst = sample_patches(features, h + d, r_m)  # (N, C, P, P) F_{q+d_i}
    p2 = (2 * r_m + 1) ** 2
    terms = p2 * (dst - src).abs().mean(dim=(1, 2, 3))  # (N,)
    if active is not None:
        terms = torch.where(active.to(device=terms.device, dtype=torch.bool), terms, terms.new_zeros(()))
    return terms.sum()
