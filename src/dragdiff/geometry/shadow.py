"""Drop shadows that move with their objects: find a moved part's cast shadow and carry it along.

A drop shadow (stickers, icons, emoji, most graphic design, and the project's scenes) darkens what lies under
it by a factor: the picture there is the background × (1 − s), with s the part's own silhouette, shifted
away from the light and softened. Left alone, a warp moves the object and leaves its shadow behind. Per
moved part this module fits that model to the picture — the darkening d = 1 − I / B, with B the background
filled in (Telea) over the part and a band around it, against the part's silhouette shifted by each offset
within the band and blurred — and keeps it only where it explains most of the darkening (a real shadow:
one offset, one opacity, achromatic); a photograph's projected ground shadow does not fit and nothing moves.
Band pixels whose channels darken by different shares (another object beside the part, not a shadow on the
background) are left out of the fit, where at least ``PLAIN_SHARE`` of the band remains.
The shadow found is then warped by its part's own map, so it follows a move, a resize or a rotation.
"""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.geometry.field import PartMap
from dragdiff.geometry.support import disc

BAND = 0.6  # the band searched around a part, × the part's equivalent radius sqrt(area/π)
MIN_OPACITY = 0.04  # a fitted darkening below this is no shadow
MAX_OPACITY = 0.6  # ... and one above this neither: a drop shadow lets what is under it show through
MIN_EXPLAINED = 0.2  # the share of the band's darkening the shifted silhouette must explain (0.2 … 0.4 tie on
# held-out suites, docs/methods.md; the higher end keeps stray dark patches of a photograph out)
ACHROMATIC = 0.12  # band pixels whose channels darken by more different shares than this are no shadow
PLAIN_SHARE = 0.5  # ... applied only where that keeps at least this share of the band
BLURS = (0.5, 1.5, 3.0)  # softness tried (Gaussian sigma, px)


def shadow_maps(
    image: np.ndarray,
    labels: np.ndarray,
    maps: dict[int, PartMap],
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(old, new) (H, W) float32 darkening in [0, 1): the moved parts' shadows where they are, and where
    their parts' maps take them. Zeros where no part casts a shadow the model explains."""
    h, w = labels.shape
    old = np.zeros((h, w), np.float32)
    new = np.zeros((h, w), np.float32)
    parts = [k for k in maps if (labels == k).sum() >= 16]
    if not parts:
        return old, new
    grid = None
    for k in parts:
        part = labels == k
        radius = max(2, round(BAND * np.sqrt(part.sum() / np.pi)))
        # everything below reads the part, its band and the ring outside that: work on the box around them
        ys, xs = np.nonzero(part)
        m = radius + max(2, radius // 2) + 2
        y0, y1, x0, x1 = (
            max(0, ys.min() - m),
            min(h, ys.max() + m + 1),
            max(0, xs.min() - m),
            min(w, xs.max() + m + 1),
        )
        box_labels, box_part = labels[y0:y1, x0:x1], part[y0:y1, x0:x1]
        band = (cv2.dilate(box_part.astype(np.uint8), disc(radius)) > 0) & (box_labels == 0)
        rgb = image[y0:y1, x0:x1].astype(np.float32) + 1.0
        values = np.concatenate([rgb.mean(-1, keepdims=True), rgb], -1)  # (h, w, 4): brightness, R, G, B
        darks = 1.0 - values / _smooth_background(values, band, box_labels, radius)
        dark = darks[..., 0]
        # a shadow darkens every channel alike; another object in the band changes the colour: left out,
        # unless most of the band is off-colour (a pattern the smooth background does not model)
        per = darks[..., 1:]
        plain = band & ((per.max(-1) - per.min(-1)) < ACHROMATIC)
        if plain.sum() >= PLAIN_SHARE * band.sum():
            band = plain
        box_fit = _fit(dark, box_part, band, radius)
        if box_fit is None:
            continue
        fitted = np.zeros((h, w), np.float32)
        fitted[y0:y1, x0:x1] = box_fit
        if grid is None:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
        if mask is not None:
            fitted *= mask
        src = maps[k].backward(grid)
        moved = cv2.remap(
            fitted,
            src[:, 0].reshape(h, w).astype(np.float32),
            src[:, 1].reshape(h, w).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        if mask is not None:
            moved *= mask
        old = 1 - (1 - old) * (1 - fitted)
        new = 1 - (1 - new) * (1 - moved)
    return old, new


def _smooth_background(values: np.ndarray, band: np.ndarray, labels: np.ndarray, radius: int) -> np.ndarray:
    """What each channel of ``values`` (H, W, C) would be in the band without a shadow: a quadratic surface
    fitted (least squares, every channel at once) to the ring just outside it — exact on a flat or graded
    background, where a shadow is easiest to see."""
    ring = (cv2.dilate(band.astype(np.uint8), disc(max(2, radius // 2))) > 0) & ~band & (labels == 0)
    level = values[ring].mean(0) if ring.any() else values.reshape(-1, values.shape[-1]).mean(0)
    out = np.broadcast_to(level.astype(np.float32), values.shape)
    if ring.sum() < 12:
        return out
    yy, xx = np.mgrid[0 : values.shape[0], 0 : values.shape[1]].astype(np.float32) / max(values.shape[:2])
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], -1)  # (H, W, 6)
    coef, *_ = np.linalg.lstsq(basis[ring], values[ring], rcond=None)  # (6, C)
    return np.maximum(basis @ coef.astype(np.float32), 1.0)


def _fit(dark: np.ndarray, part: np.ndarray, band: np.ndarray, radius: int) -> np.ndarray | None:
    """The part's silhouette, shifted and blurred, × the opacity that best explains ``dark`` on ``band``
    (least squares over offsets within ``radius`` and the softness ``BLURS``); None if it explains too
    little or is too faint."""
    if band.sum() < 16:
        return None
    band = band & (np.abs(dark) < 0.6)  # other objects in the band are no shadow (at most 60 % dark)
    if band.sum() < 16:
        return None
    d = dark[band]
    total = float((d**2).sum())
    if total <= 0:
        return None
    ys, xs = np.nonzero(band | part)
    y0, y1 = max(0, ys.min() - radius), min(part.shape[0], ys.max() + radius + 1)
    x0, x1 = max(0, xs.min() - radius), min(part.shape[1], xs.max() + radius + 1)
    sil = part[y0:y1, x0:x1].astype(np.float32)
    inside = band[y0:y1, x0:x1].astype(np.float32)
    weighted = np.where(band, dark, 0.0).astype(np.float32)[y0:y1, x0:x1]
    pad = ((radius, radius), (radius, radius))
    oy, ox = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    within = oy * oy + ox * ox <= radius * radius
    best: tuple[float, float, np.ndarray] | None = None
    for sigma in BLURS:
        soft = cv2.GaussianBlur(sil, (0, 0), sigma * max(1.0, radius / 10))
        # every offset at once (OpenCV's FFT correlation; a loop over offsets is 30x slower): for the
        # silhouette shifted by o, sum(d * s) and sum(s * s) over the band, each a (2r+1)^2 map over o
        ds = cv2.matchTemplate(np.pad(weighted, pad), soft, cv2.TM_CCORR)
        ss = cv2.matchTemplate(np.pad(inside, pad), soft * soft, cv2.TM_CCORR)
        ok = within & (ss >= 1.0) & (ds > 0)
        if not ok.any():
            continue
        explained = np.where(ok, ds * ds / np.maximum(ss, 1.0) / total, -1.0)
        iy, ix = np.unravel_index(int(np.argmax(explained)), explained.shape)
        if best is None or explained[iy, ix] > best[0]:
            shifted = np.zeros_like(soft)
            _paste_shifted(shifted, soft, int(ox[iy, ix]), int(oy[iy, ix]))
            best = (float(explained[iy, ix]), float(ds[iy, ix] / ss[iy, ix]), shifted)
    if best is None or best[0] < MIN_EXPLAINED or not MIN_OPACITY <= best[1] <= MAX_OPACITY:
        return None
    out = np.zeros(part.shape, np.float32)
    out[y0:y1, x0:x1] = best[1] * best[2]
    return out


def _paste_shifted(dst: np.ndarray, src: np.ndarray, dx: int, dy: int) -> None:
    """dst[y + dy, x + dx] = src[y, x] where both are inside."""
    h, w = src.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    dst[yd, xd] = src[ys, xs]
