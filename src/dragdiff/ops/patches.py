"""Bilinear patch sampling on the supervision grid (the F_q(z) of paper Eq. 3 at non-integer q).

Paper notation: F (features) is the (1, C, H', W') feature map; a patch Ω(q, r) is the (2r+1)² square of grid
points around q = (row, col). Sampling is bilinear between pixel centres (``F.grid_sample`` with
``align_corners=True``, ``padding_mode="border"``): integer coordinates hit pixel centres exactly, and points
outside the grid are clamped to it (the value of the nearest border pixel), so patches at the edge never crash
(the reference implementation indexes out of range there).

It is written as a ``torch.gather`` of the four corners and their weights rather than ``grid_sample``, whose
CUDA backward accumulates with atomicAdd and has no deterministic version; gather's backward is deterministic
under ``torch.use_deterministic_algorithms``. The grid coordinates are used as they are (no round trip
through [-1, 1]), so the values are the exact bilinear ones; ``grid_sample``'s normalisation adds a rounding
error of up to ~1e-7·W pixels (about 1e-5 in fp32 on a 256-wide grid).
"""

from __future__ import annotations

import torch
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
    # border padding = clamping the coordinates to the grid; the far corner is clamped too, where its weight
    # is 0 (a coordinate exactly on the last row/column)
    rows = pts[..., 0].reshape(-1).clamp(0, h - 1)  # (M,), M = N*P*P
    cols = pts[..., 1].reshape(-1).clamp(0, w - 1)  # (M,)
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = rows - r0, cols - c0  # (M,) fractional parts, the weights of the next row/column
    r0i, c0i = r0.long(), c0.long()
    r1i, c1i = (r0i + 1).clamp_max(h - 1), (c0i + 1).clamp_max(w - 1)
    index = torch.stack([r0i * w + c0i, r0i * w + c1i, r1i * w + c0i, r1i * w + c1i])  # (4, M) nw ne sw se
    weight = torch.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])  # (4, M)
    flat = features.reshape(c, h * w)  # (C, H*W), a view (B = 1): its backward copies nothing
    corners = flat.gather(1, index.reshape(1, -1).expand(c, -1)).reshape(c, 4, -1)  # (C, 4, M)
    out = (corners * weight).sum(dim=1)  # (C, M)
    return out.reshape(c, n, p, p).transpose(0, 1)  # (N, C, P, P)
