"""A hole in a textured background filled with the background itself, copied from one offset.

Regular patterns (checks, stripes, dots, waves) repeat: the hole's surroundings match the picture shifted by
a whole period, and the same shift fills the hole exactly. For each piece of the hole, the offset is the one
whose copy of the ring around the piece matches the ring best (sum of squared differences over every offset
at once, OpenCV's masked ``matchTemplate``), among the offsets whose copied pixels (piece and ring) are all
background that stays. The copy is kept where it matches the ring within ``MATCH_RMS`` grey levels and its
pixels have the ring's colours (not another object that sits one period away); else the caller's fill (Telea
or the model) paints the piece. Pure numpy + OpenCV; arrays are (H, W, 3) uint8 RGB and (H, W)
bool masks.
"""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.geometry.support import disc, nearest_distance

RING_PX = 4  # the ring around a piece that its copy must match
MATCH_RMS = 12.0  # a copy is kept when its ring differs from the piece's ring by at most this (RMS, 0–255)
CANDIDATES = 24  # offsets tried per piece, best ring match first
PALETTE = 0.95  # ... until one whose copied pixels are this share in the ring's colours (no other object)
PALETTE_DIST = 24.0  # a colour within this (RGB distance, 0–255) of one of the ring's is in its palette
MIN_SHIFT = 2  # offsets shorter than this copy the piece's own neighbourhood: a smear, not the pattern


def shift_fill(
    picture: np.ndarray,
    hole: np.ndarray,
    stays: np.ndarray,
    max_rms: float = MATCH_RMS,
    min_ring_std: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(picture with the pieces of ``hole`` it could fill copied in, the filled pixels). ``stays``: the
    background pixels that may be copied from and matched (not the hole, nothing moved, no front object).
    ``max_rms``: the ring match a copy needs; ``min_ring_std``: only pieces whose ring varies at least this
    much (grey levels) are tried (a pattern, not a smooth gradient)."""
    out = picture.copy()
    filled = np.zeros(hole.shape, bool)
    count, pieces = cv2.connectedComponents(hole.astype(np.uint8), connectivity=8)
    img = picture.astype(np.float32)
    bad = (~stays).astype(np.float32)  # pixels a copy must not come from
    h, w = hole.shape
    for c in range(1, count):
        piece = pieces == c
        ring = (cv2.dilate(piece.astype(np.uint8), disc(RING_PX)) > 0) & stays
        if ring.sum() < 8 or float(img[ring].mean(-1).std()) < min_ring_std:
            continue
        ys, xs = np.nonzero(piece | ring)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        if y1 - y0 >= h or x1 - x0 >= w:
            continue
        templ = img[y0:y1, x0:x1]
        ring_box = ring[y0:y1, x0:x1].astype(np.float32)
        used = (piece | ring)[y0:y1, x0:x1].astype(np.float32)
        # SSD of the ring against every placement, and how many copied pixels would not be background
        ssd = cv2.matchTemplate(img, templ, cv2.TM_SQDIFF, mask=np.repeat(ring_box[..., None], 3, axis=2))
        foul = cv2.matchTemplate(bad, used, cv2.TM_CCORR)
        cost = np.where(foul < 0.5, ssd, np.inf)
        r = MIN_SHIFT - 1  # the piece's own place and the offsets within r of it copy its neighbourhood
        cost[max(0, y0 - r) : y0 + r + 1, max(0, x0 - r) : x0 + r + 1] = np.inf
        py, px = np.nonzero(piece)
        palette = img[ring]
        flat = cost.ravel()
        for i in np.argsort(flat)[:CANDIDATES]:  # the best matches first
            if not np.isfinite(flat[i]) or np.sqrt(flat[i] / (3.0 * ring.sum())) > max_rms:
                break
            dy, dx = int(i // cost.shape[1]) - y0, int(i % cost.shape[1]) - x0
            copy = picture[py + dy, px + dx]
            if _in_palette(copy.astype(np.float32), palette):
                out[py, px] = copy
                filled |= piece
                break
    return out, filled


def _in_palette(colours: np.ndarray, palette: np.ndarray) -> bool:
    """Whether ``PALETTE`` of ``colours`` (N, 3) lie within ``PALETTE_DIST`` of one of ``palette`` (M, 3):
    a copy of the background, not of an object that happens to sit where the pattern repeats."""
    pal = palette[:: max(1, len(palette) // 256)]
    cols = colours[:: max(1, len(colours) // 512)]
    nearest = nearest_distance(cols, pal)
    return float((nearest <= PALETTE_DIST).mean()) >= PALETTE
