"""Image metrics for the benchmark: PSNR, SSIM and LPIPS (optionally restricted to a region), DragBench's
Image Fidelity, and template matching of handle neighbourhoods (where dragged content ended up).

Images are (B, 3, H, W) tensors in [0, 1] unless a docstring says otherwise; a ``region`` is an (H, W) bool
array/tensor (True = count this pixel) or None for the whole image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dragdiff.bench.lpips import LPIPS

PSNR_CAP = 100.0  # dB; identical images would give +inf, which neither averages nor serialises to JSON
IF_SIZE = 224  # DragBench's Image Fidelity compares both images at 224 x 224 (SPEC §7)


def to_tensor(image: Image.Image, device: torch.device | str | None = None) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float32 in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


def _region(region: np.ndarray | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(H, W) bool -> (1, 1, H, W) float weights on ``like``'s device; None stays None."""
    if region is None:
        return None
    r = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region)
    if r.shape != like.shape[-2:]:
        raise ValueError(f"region is {tuple(r.shape)} but the images are {tuple(like.shape[-2:])} (H, W)")
    return r.to(device=like.device, dtype=like.dtype)[None, None]


def _masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> float:
    """Mean of (B, C, H, W) ``values`` where ``weights`` (1, 1, H, W) is 1; nan for an empty region."""
    if weights is None:
        return values.mean().item()
    w = weights.expand_as(values)
    total = w.sum()
    return (values * w).sum().div(total).item() if total > 0 else math.nan


def psnr(a: torch.Tensor, b: torch.Tensor, region: np.ndarray | torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB for [0, 1] images (peak 1), over ``region``; capped at PSNR_CAP."""
    mse = _masked_mean((a - b).pow(2), _region(region, a))
    if math.isnan(mse):
        return math.nan
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / max(mse, 1e-30)))


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(like.shape[1], 1, size, size)  # (C, 1, k, k), depthwise


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian 11x11, σ = 1.5, K1 = 0.01, K2 = 0.03) -> (B, C, H, W).

    Borders are reflect-padded so the map covers every pixel and can be averaged over any region.
    """
    c1, c2 = 0.01**2, 0.03**2
    win = _gaussian_window(window, sigma, a)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), win, groups=x.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, region: np.ndarray | torch.Tensor | None = None) -> float:
    """Mean SSIM over ``region`` (all channels)."""
    return _masked_mean(ssim_map(a, b), _region(region, a))


@torch.no_grad()
def lpips_distance(
    lpips: LPIPS, a: torch.Tensor, b: torch.Tensor, region: np.ndarray | torch.Tensor | None = None
) -> float:
    """LPIPS between [0, 1] images; with a region, the mean of LPIPS's spatial map over that region."""
    dev = lpips.shift.device
    x0, x1 = a.to(dev) * 2 - 1, b.to(dev) * 2 - 1
    if region is None:
        return lpips(x0, x1).mean().item()
    return _masked_mean(lpips(x0, x1, spatial=True), _region(region, x0))


@torch.no_grad()
def image_fidelity(lpips: LPIPS, source: torch.Tensor, edited: torch.Tensor) -> float:
    """DragBench's IF for one sample: 1 − LPIPS(source, edit), both bilinearly resized to 224² (SPEC §7)."""
    size = (IF_SIZE, IF_SIZE)
    a = F.interpolate(source, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(edited, size=size, mode="bilinear", align_corners=False)
    return 1.0 - lpips_distance(lpips, a, b)


def template_match(
    source: torch.Tensor, edited: torch.Tensor, points: torch.Tensor, radius: int
) -> torch.Tensor:
    """Where each source neighbourhood reappears in the edit: the best normalised cross-correlation match.

    ``points``: (N, 2) (x, y) image pixels in ``source``; the (2r+1)² patch around each (edge-padded) is
    compared with the patch around every pixel of ``edited`` (zero-mean, unit-norm over all channels).
    Returns the (N, 2) (x, y) centres of the best matches. Images are (1, 3, H, W).
    """
    k = 2 * radius + 1
    pad = (radius,) * 4
    src = F.pad(source, pad, mode="replicate")  # (1, 3, H+2r, W+2r)
    edit = F.pad(edited, pad, mode="replicate")
    xy = points.round().long().tolist()
    tpl = torch.stack([src[0, :, y : y + k, x : x + k] for x, y in xy])  # (N, 3, k, k), centred on the points
    tpl = tpl - tpl.mean(dim=(1, 2, 3), keepdim=True)
    tpl = tpl / (tpl.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-8)
    # Σ tpl·(e − mean e) = Σ tpl·e because tpl is zero-mean; ‖e − mean e‖² = Σe² − (Σe)²/d
    ones = torch.ones_like(tpl[:1])  # (1, 3, k, k)
    num = F.conv2d(edit, tpl)  # (1, N, H, W)
    s1, s2 = F.conv2d(edit, ones), F.conv2d(edit * edit, ones)  # (1, 1, H, W)
    den = (s2 - s1 * s1 / ones.numel()).clamp_min(0).sqrt()
    score = (num / (den + 1e-8)).flatten(2)[0]  # (N, H·W)
    idx = score.argmax(dim=1)
    width = edited.shape[-1]
    return torch.stack([idx % width, idx // width], dim=1).float()  # (N, 2) (x, y)
