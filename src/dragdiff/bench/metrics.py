"""Image metrics for the benchmark: PSNR, SSIM and LPIPS (optionally restricted to a region), DragBench's
Image Fidelity, and template matching of handle neighbourhoods (where dragged content ended up).

Images are (B, 3, H, W) tensors in [0, 1] unless a docstring says otherwise; a ``region`` is an (H, W) bool
array/tensor (True = count this pixel) or None for the whole image. ``psnr`` and ``PSNR_CAP`` live in the
neutral ``dragdiff.metrics`` (model training uses them without the bench) and are re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dragdiff.bench.lpips import LPIPS
from dragdiff.metrics import PSNR_CAP as PSNR_CAP
from dragdiff.metrics import masked_mean, region_weights
from dragdiff.metrics import psnr as psnr

IF_SIZE = 224  # DragBench's Image Fidelity compares both images at 224 x 224 (SPEC §7)


def to_tensor(image: Image.Image, device: torch.device | str | None = None) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float32 in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


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
    return masked_mean(ssim_map(a, b), region_weights(region, a))


@torch.no_grad()
def lpips_distance(
    lpips: LPIPS, a: torch.Tensor, b: torch.Tensor, region: np.ndarray | torch.Tensor | None = None
) -> float:
    """LPIPS between [0, 1] images; with a region, the mean of LPIPS's spatial map over that region."""
    dev = lpips.shift.device
    x0, x1 = a.to(dev) * 2 - 1, b.to(dev) * 2 - 1
    if region is None:
        return lpips(x0, x1).mean().item()
    return masked_mean(lpips(x0, x1, spatial=True), region_weights(region, x0))


@torch.no_grad()
def image_fidelity(lpips: LPIPS, source: torch.Tensor, edited: torch.Tensor) -> float:
    """DragBench's IF for one sample: 1 − LPIPS(source, edit), both bilinearly resized to 224² (SPEC §7)."""
    size = (IF_SIZE, IF_SIZE)
    a = F.interpolate(source, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(edited, size=size, mode="bilinear", align_corners=False)
    return 1.0 - lpips_distance(lpips, a, b)


def _templates(image: torch.Tensor, points: torch.Tensor, radius: int, fx: float, fy: float) -> torch.Tensor:
    """(N, C, k, k) patches of ``image`` (1, C, H, W) around ``points`` (N, 2) (x, y), as they would look
    after the content was scaled by (fx, fy): the patch samples the image at offsets / scale (bilinear)."""
    height, width = image.shape[-2:]
    off = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)  # (k,)
    xs = points[:, 0, None, None] + off[None, None, :] / fx  # (N, 1, k)
    ys = points[:, 1, None, None] + off[None, :, None] / fy  # (N, k, 1)
    xs, ys = torch.broadcast_tensors(xs, ys)  # (N, k, k)
    grid = torch.stack([(2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1], dim=-1)  # pixel -> [-1, 1]
    src = image.expand(len(points), -1, -1, -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


def template_match(
    source: torch.Tensor,
    edited: torch.Tensor,
    points: torch.Tensor,
    radius: int,
    scales: tuple[tuple[float, float], ...] = ((1.0, 1.0),),
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Where each source neighbourhood reappears in the edit: the best (weighted) mean-squared-error match.

    ``points``: (N, 2) (x, y) pixels of ``source``. The (2r+1)² patch around each is compared with the patch
    around every pixel of ``edited`` by weighted mean squared difference over all channels (not normalised
    cross-correlation: that is blind to brightness, so any two spots on a smooth shading ramp would match),
    for each (horizontal, vertical) scale in ``scales`` the content may have undergone (a drag can stretch or
    resize it). ``weights`` (1, 1, H, W) in [0, 1] says which source pixels belong to the dragged content
    (e.g. the object's coverage), so static background inside the patch does not pull the match back to the
    handle; (N, 1, H, W) gives each point its own map (points on different objects). Returns the (N, 2) (x, y)
    centres of the best matches. Images are (1, 3, H, W).
    """
    pts = points.to(source)
    weights = torch.ones_like(source[:, :1]) if weights is None else weights.to(source)
    edit = F.pad(edited, (radius,) * 4, mode="replicate")  # (1, 3, H+2r, W+2r)
    edit_sq = edit * edit
    best = None
    for fx, fy in scales:
        t = _templates(source, pts, radius, fx, fy)  # (N, 3, k, k)
        w = _templates(weights, pts, radius, fx, fy).expand_as(t)  # (N, 3, k, k)
        w_sum = w.flatten(1).sum(dim=1).clamp_min(1e-6).view(1, -1, 1, 1)  # (1, N, 1, 1)
        # Σ w (t − e)² = Σ w t² − 2 Σ w t e + Σ w e², the last two as convolutions over the edit
        wt2 = (w * t * t).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        sse = wt2 - 2 * F.conv2d(edit, w * t) + F.conv2d(edit_sq, w)  # (1, N, H, W)
        score = -(sse / w_sum).flatten(2)[0]  # (N, H·W), higher = better
        best = score if best is None else torch.maximum(best, score)
    assert best is not None
    idx = best.argmax(dim=1)
    width = edited.shape[-1]
    return torch.stack([idx % width, idx // width], dim=1).float()  # (N, 2) (x, y)
