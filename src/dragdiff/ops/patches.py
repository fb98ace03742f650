"""Bilinear patch sampling on the supervision grid (the F_q(z) of paper Eq. 3 at non-integer q).

Paper notation: F (features) is the (1, C, H', W') feature map; a patch Ω(q, r) is the (2r+1)² square of grid
points around q = (row, col). Sampling is bilinear with ``align_corners=True`` so that integer coordinates hit
pixel centres (exactly up to float rounding of the [-1, 1] normalisation, ~1e-7 in fp32); points outside the
grid take the value of the nearest border pixel (clamped), so patches at the edge never crash (the reference
implementation indexes out of range there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def patch_offsets(radius: int, like: Tensor) -> Tensor:
    """The (P, P, 2) (drow, dcol) offsets of a (2r+1)² square, P = 2r+1, row-major."""
    r = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1)  # (P, P, 2)


def sample_patches(features: Tensor, centers: Tensor, radius: int) -> Tensor:
    """F at Ω(q_i, r) for each centre q_i: (1, C, H, W), (N, 2) (row, col) -> (N, C, 2r+1, 2r+1), bilinear."""
    if features.dim() != 4 or features.shape[0] != 1:
        raise ValueError(f"features must be (1, C, H, W), got {tuple(features.shape)}")
    _, c, h, w = features.shape
    p = 2 * radius + 1
    n = centers.shape[0]
    pts = centers.to(features)[:, None, None, :] + patch_offsets(radius, features)  # (N, P, P, 2)
    # grid_sample wants (x, y) = (col, row) in [-1, 1]; with align_corners=True, -1 and 1 are the centres
    # of the first and last pixels
    scale = pts.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = pts.flip(-1) * scale - 1.0  # (N, P, P, 2) as (x, y)
    out = F.grid_sample(
        features,
        grid.reshape(1, n, p * p, 2),  # (1, N, P*P, 2)
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )  # (1, C, N, P*P)
    return out[0].reshape(c, n, p, p).transpose(0, 1)  # (N, C, P, P)
