"""Bilinear resize as two matmuls with interpolation matrices (a deterministic backward on CUDA).

``F.interpolate(mode="bilinear")`` has no deterministic CUDA backward (it accumulates with atomicAdd), so the
features on the drag path are resized here instead: out = A_h · x · A_wᵀ, where A (out × in) holds PyTorch's
two linear weights per output index. matmul's backward is deterministic once ``CUBLAS_WORKSPACE_CONFIG`` is
set. The matrices follow ``upsample_bilinear2d`` with ``size=`` (antialias off):
    scale = in/out                       (align_corners=False)    (in-1)/(out-1), 0 if out = 1  (True)
    src   = max(scale·(dst+½) - ½, 0)     (align_corners=False)    scale·dst                     (True)
    i0 = min(⌊src⌋, in-1), i1 = min(i0+1, in-1), λ1 = clamp(src - i0, 0, 1), λ0 = 1 - λ1
computed in PyTorch's accumulation type (fp32 for fp32/fp16/bf16), so values agree to float rounding.
Under TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``) the product is TF32, like any fp32 matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bilinear_matrix(
    in_size: int, out_size: int, *, align_corners: bool, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """(out_size, in_size) A with A @ v = the 1-D bilinear resize of v, as ``F.interpolate`` computes it."""
    acc = torch.promote_types(dtype, torch.float32)  # PyTorch's accscalar_t for the index maths
    dst = torch.arange(out_size, dtype=acc, device=device)  # (out,)
    if align_corners:
        span = in_size - 1 if out_size > 1 else 0
        scale = torch.full((), span, dtype=acc, device=device) / max(out_size - 1, 1)
        src = dst * scale
    else:
        # (torch.full, not torch.tensor: a fill on the device, no host copy, so it can run in a CUDA graph)
        scale_t = torch.full((), in_size, dtype=acc, device=device) / out_size  # rounded in acc, like C++
        # scale·(dst+½) - ½ is one fused multiply-add in PyTorch's kernels: exact in float64, rounded once
        src = (scale_t.double() * (dst.double() + 0.5) - 0.5).to(acc).clamp_min(0)
    i0 = src.floor().clamp_max(in_size - 1)  # (out,)
    lam1 = (src - i0).clamp(0, 1)
    i0 = i0.long()
    i1 = (i0 + 1).clamp_max(in_size - 1)
    cols = torch.arange(in_size, device=device)  # (in,); one-hot rows by comparison, no scatter
    w0 = (cols == i0[:, None]).to(acc) * (1 - lam1)[:, None]  # (out, in)
    w1 = (cols == i1[:, None]).to(acc) * lam1[:, None]
    return (w0 + w1).to(dtype)


def resize_bilinear(x: Tensor, size: tuple[int, int], *, align_corners: bool = False) -> Tensor:
    """(B, C, H, W) -> (B, C, h, w): ``F.interpolate(x, size, mode="bilinear", align_corners=...)``."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got {tuple(x.shape)}")
    (h_in, w_in), (h_out, w_out) = x.shape[-2:], size
    a_h = bilinear_matrix(h_in, h_out, align_corners=align_corners, dtype=x.dtype, device=x.device)  # (h, H)
    a_w = bilinear_matrix(w_in, w_out, align_corners=align_corners, dtype=x.dtype, device=x.device)  # (w, W)
    # width first, then height: out = λ_h0 (λ_w0 x00 + λ_w1 x01) + λ_h1 (…), PyTorch's order of the sums
    return torch.matmul(a_h, torch.matmul(x, a_w.T))  # (B, C, H, w) -> (B, C, h, w)
