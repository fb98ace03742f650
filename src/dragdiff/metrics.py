"""Pixel metrics with no dependency on the benchmark: PSNR over an optional region, and its helpers.

Both ``dragdiff.model.train`` (VAE reconstruction PSNR) and ``dragdiff.bench.metrics`` (which re-exports
``psnr`` and ``PSNR_CAP`` and adds SSIM, LPIPS, Image Fidelity) use these, so neither area imports the other
for them. Images are (B, C, H, W) tensors in [0, 1]; a ``region`` is an (H, W) bool array/tensor
(True = count this pixel) or None for the whole image. ``speckle_share`` measures the VAE's colour speckles
(issue #17). Imports torch and numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB; identical images would give +inf, which neither averages nor serialises to JSON


def region_weights(region: np.ndarray | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(H, W) bool -> (1, 1, H, W) float weights on ``like``'s device; None stays None."""
    if region is None:
        return None
    r = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region)
    if r.shape != like.shape[-2:]:
        raise ValueError(f"region is {tuple(r.shape)} but the images are {tuple(like.shape[-2:])} (H, W)")
    return r.to(device=like.device, dtype=like.dtype)[None, None]


def masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> float:
    """Mean of (B, C, H, W) ``values`` where ``weights`` (1, 1, H, W) is 1; nan for an empty region."""
    if weights is None:
        return values.mean().item()
    w = weights.expand_as(values)
    total = w.sum()
    return (values * w).sum().div(total).item() if total > 0 else math.nan


def psnr(a: torch.Tensor, b: torch.Tensor, region: np.ndarray | torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB for [0, 1] images (peak 1), over ``region``; capped at PSNR_CAP."""
    mse = masked_mean((a - b).pow(2), region_weights(region, a))
    if math.isnan(mse):
        return math.nan
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / max(mse, 1e-30)))


# Speckle measure (issue #17): a speckle is a reconstructed pixel whose colour lies far outside every colour
# of the source around it. Blur stays inside the local range (it mixes neighbouring colours): not counted.
SPECKLE_WINDOW = 5  # px: the source's neighbourhood, 5×5
SPECKLE_THRESHOLD = 0.2  # of the [0, 1] range (51 of 255 levels): marks the rainbow dots; 0.1 marks tints too


def local_range_excess(rec: torch.Tensor, src: torch.Tensor, window: int = SPECKLE_WINDOW) -> torch.Tensor:
    """How far each pixel of ``rec`` lies outside the range of ``src`` around it: (B, C, H, W) -> (B, H, W).

    Per channel, the excursion above the maximum or below the minimum of ``src`` over the
    ``window``×``window`` neighbourhood (0 inside the range); the largest over the channels. In the images'
    own units.
    """
    if rec.shape != src.shape or rec.ndim != 4:
        shapes = f"{tuple(rec.shape)} and {tuple(src.shape)}"
        raise ValueError(f"need two (B, C, H, W) images of one shape, got {shapes}")
    pad = window // 2
    hi = F.max_pool2d(src, window, stride=1, padding=pad)  # (B, C, H, W), padding never wins a max
    lo = -F.max_pool2d(-src, window, stride=1, padding=pad)
    return torch.maximum(rec - hi, lo - rec).clamp(min=0).amax(dim=1)  # (B, H, W)


def speckle_share(
    rec: torch.Tensor, src: torch.Tensor, threshold: float = SPECKLE_THRESHOLD, window: int = SPECKLE_WINDOW
) -> torch.Tensor:
    """Per image, the share of pixels of ``rec`` more than ``threshold`` outside the local range of ``src``.

    (B, C, H, W) images in [0, 1] -> (B,) shares in [0, 1].
    """
    return (local_range_excess(rec, src, window) > threshold).float().mean(dim=(1, 2))
