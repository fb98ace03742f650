"""Point tracking (paper Eq. 4): nearest neighbour of the original handle feature in a window.

Paper notation: f_i = F_{h_i^0}(z_t) the feature of the un-optimised latent at the ORIGINAL handle h_i^0
(``reference``); Ω(h_i^k, r_p) the (2r_p+1)² window around the current handle, clipped to the grid.
    h_i^{k+1} = argmin_{q ∈ Ω(h_i^k, r_p)} ||F_q(ẑ_t^{k+1}) - f_i||_1
"""

from __future__ import annotations

import torch
from torch import Tensor

from dragdiff.ops.patches import patch_offsets


def features_at(features: Tensor, points: Tensor) -> Tensor:
    """f_i = F_{h_i}: (N, C) features of a (1, C, H, W) map at (N, 2) (row, col) grid points (rounded).

    Use it on F0 at the original handles to get the ``reference`` of ``track_points``.
    """
    _, _, h, w = features.shape
    pts = points.detach().round().to(device=features.device, dtype=torch.long)  # (N, 2)
    rows, cols = pts[:, 0].clamp(0, h - 1), pts[:, 1].clamp(0, w - 1)
    return features[0, :, rows, cols].T  # (N, C)


def track_points(features: Tensor, reference: Tensor, handles: Tensor, r_p: int) -> Tensor:
    """Eq. 4: (1, C, H, W) features, (N, C) reference, (N, 2) (row, col) handles -> new (N, 2) handles.

    The window is centred on the rounded handle and clipped to the grid; ties go to the first candidate in
    row-major order. No gradient flows; the inputs are not modified.
    """
    if features.dim() != 4 or features.shape[0] != 1:
        raise ValueError(f"features must be (1, C, H, W), got {tuple(features.shape)}")
    _, c, h, w = features.shape
    n = handles.shape[0]
    work = torch.promote_types(features.dtype, torch.float32)  # L1 sums over C in at least fp32
    feats = features.detach()[0].reshape(c, h * w)  # (C, H*W), a view: only the candidates get copied
    centre = handles.detach().round().to(device=features.device, dtype=torch.long)  # (N, 2)
    offsets = patch_offsets(r_p, centre).reshape(-1, 2)  # (K, 2), K = (2r_p+1)^2
    cand = centre[:, None, :] + offsets[None]  # (N, K, 2)
    # clipping the window to the grid: clamped duplicates are real grid points, and the row-major order of
    # the distinct ones is kept, so argmin picks what a scan of the clipped window would pick
    rows = cand[..., 0].clamp(0, h - 1)  # (N, K)
    cols = cand[..., 1].clamp(0, w - 1)  # (N, K)
    cand_feats = feats[:, (rows * w + cols).reshape(-1)].reshape(c, n, -1).to(work)  # (C, N, K)
    ref = reference.detach().to(device=features.device, dtype=work).T[:, :, None]  # (C, N, 1)
    dist = (cand_feats - ref).abs().sum(dim=0)  # (N, K)
    best = dist.argmin(dim=1, keepdim=True)  # (N, 1)
    new = torch.cat([rows.gather(1, best), cols.gather(1, best)], dim=1)  # (N, 2)
    out_dtype = handles.dtype if handles.is_floating_point() else torch.get_default_dtype()
    return new.to(device=handles.device, dtype=out_dtype)
