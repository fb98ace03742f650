"""Which still objects are in front of the dragged content, so that a drag moves it behind them.

A drag keeps the depth order: content dragged towards an object that hides part of it goes on under that
object (the ground-truth suite's ``occluded`` kind), while content lying on top of an object stays on top
(``crossing``). Without depth, the cue is the outline (a T-junction read as areas): an object hidden in part
has a bite taken out of its outline where the front object covers it, so its convex hull reaches into the
front object, while the front object's hull holds little or nothing of it.

    bite       the moved part's convex hull less everything that moves (the hidden corner, a concave
               shape's own notches)
    neighbour  the object at the deepest pixel of each sizable piece of the bite, segmented like any
               handle's support (``support.segment_support``, no mask)
    object     the neighbour stands out from the background around the part: at least ``OWN_COLOUR`` of
               its pixels are farther than ``BACKGROUND_DE`` (CIE76) from every colour of that background
               (a concave shape's notch holds a patch of background, which GrabCut also segments), and it
               takes less than ``MAX_AREA`` of the picture
    in front   the object touches the part, reaches out of the part's hull (at least ``OUT_OF_HULL`` of it:
               what a concave part's notch holds, a piece of an object it lies on, stays inside), and the
               part's hull covers at least ``RATIO`` times as much of it as its hull covers of the part

The front objects are source pixels that stay as they are: the moved content is drawn under them, the seam
and the fill leave them alone. What they hide of a part is completed (amodal completion): the part's hull
inside them, the least a convex object hides there, in the part's own colours carried outwards from its
visible pixels (Telea's fast marching, ``complete``), so that a part dragged sideways out from behind an
object comes out whole rather than with the object's bite in it. Pure numpy + OpenCV; image arrays are
(H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.geometry.support import disc, nearest_distance, segment_support

BITE = 0.04  # a bite below this share of the part's hull is the outline's own unevenness, not an occluder
RATIO = 2.0  # in front when the part's hull covers this many times more of it than its hull does of the part
MAX_AREA = 0.5  # a "neighbour" this large (share of the picture) is the background
OUT_OF_HULL = 0.2  # an occluder has at least this share of its pixels outside the part's hull
TOUCH_PX = 3  # ... and one touching the part along fewer pixels than this is not its occluder
PIECES = 3  # bite pieces looked at per part, largest first
OWN_COLOUR = 0.5  # an object: this share of its pixels has colours the background around the part has not
BACKGROUND_DE = 10.0  # ... farther than this (CIE76 ΔE) from each of the background's colours
BAND_PX = 4  # the background around the part: this wide a band outside it
TELEA_RADIUS = 3  # the completion's fast-marching radius (px)
SAMPLES = 400  # colours compared, at most, from each side (a fixed subsample: the answer is deterministic)


def front_of(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The still objects in front of the moved parts of ``labels`` (0 = stays, k = part k) and what they hide
    of each: ((H, W) bool, (H, W) int32 labels of the hidden pixels, 0 = none)."""
    front = np.zeros(labels.shape, bool)
    hidden = np.zeros(labels.shape, np.int32)
    moving = labels > 0
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    for k in range(1, int(labels.max()) + 1):
        part = labels == k
        hull = _hull(part)
        bite = hull & ~moving & ~front
        if bite.sum() < max(TOUCH_PX, BITE * hull.sum()):
            continue
        count, pieces, stats, _ = cv2.connectedComponentsWithStats(bite.astype(np.uint8), connectivity=8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:PIECES] + 1
        ring = cv2.dilate(part.astype(np.uint8), disc(1)) > 0
        for c in order:
            piece = pieces == c
            if piece.sum() < max(TOUCH_PX, BITE * hull.sum()) or not (piece & ring).any():
                continue
            other = _object_at(image, piece) & ~moving
            if not other.any() or other.sum() >= MAX_AREA * other.size:
                continue
            if (other & ring).sum() < TOUCH_PX or (other & ~hull).sum() < OUT_OF_HULL * other.sum():
                continue
            around = (cv2.dilate(part.astype(np.uint8), disc(BAND_PX)) > 0) & ~ring & ~moving
            around &= ~(cv2.dilate(other.astype(np.uint8), disc(1)) > 0)
            if not _stands_out(lab, other, around):
                continue
            hidden_px = float((hull & other).sum())  # the part's hull reaching into the neighbour
            over = float((_hull(other) & part).sum())  # the neighbour's hull reaching into the part
            if hidden_px >= RATIO * over:
                front |= other
                hidden[hull & other & (hidden == 0)] = k
    return front, hidden


def complete(image: np.ndarray, labels: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """``image`` with each part's ``hidden`` pixels painted in the part's colours, carried outwards from its
    visible inside (its anti-aliased rim left out) by Telea's fast marching."""
    out = image.copy()
    for k in range(1, int(hidden.max()) + 1):
        hid = hidden == k
        if not hid.any():
            continue
        part = labels == k
        inner = cv2.erode(part.astype(np.uint8), disc(1)) > 0
        inner = inner if inner.any() else part
        ys, xs = np.nonzero(hid)
        m = TELEA_RADIUS + 2  # the box: the hidden pixels and the part's pixels within reach of them
        y0, y1 = max(0, ys.min() - m), min(hid.shape[0], ys.max() + m + 1)
        x0, x1 = max(0, xs.min() - m), min(hid.shape[1], xs.max() + m + 1)
        unknown = (~inner[y0:y1, x0:x1]).astype(np.uint8)
        if unknown.all():
            continue
        bgr = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
        filled = cv2.inpaint(bgr, unknown, TELEA_RADIUS, cv2.INPAINT_TELEA)[..., ::-1]
        box = hid[y0:y1, x0:x1]
        out[y0:y1, x0:x1][box] = filled[box]
    return out


def _object_at(image: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """The object segmented from the deepest pixel of ``piece`` (the one farthest from its outline)."""
    depth = cv2.distanceTransform(np.pad(piece, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return segment_support(image, np.array([[float(x), float(y)]]), None) == 1


def _stands_out(lab: np.ndarray, region: np.ndarray, background: np.ndarray) -> bool:
    """Whether ``OWN_COLOUR`` of ``region``'s inner pixels (Lab) are ``BACKGROUND_DE`` from every colour of
    ``background``; with no background to compare with, the region stands out."""
    inner = cv2.erode(region.astype(np.uint8), disc(1)) > 0
    inner = inner if inner.any() else region
    if not background.any():
        return True
    ours, theirs = _sample(lab[inner]), _sample(lab[background])
    nearest = nearest_distance(ours, theirs)
    return float((nearest > BACKGROUND_DE).mean()) >= OWN_COLOUR


def _sample(colours: np.ndarray) -> np.ndarray:
    """At most ``SAMPLES`` of ``colours`` (N, 3), evenly spaced in their order."""
    if len(colours) <= SAMPLES:
        return colours
    return colours[np.linspace(0, len(colours) - 1, SAMPLES).round().astype(int)]


def _hull(region: np.ndarray) -> np.ndarray:
    """The convex hull of a (H, W) bool region, as a mask of the same size."""
    points = cv2.findNonZero(region.astype(np.uint8))
    out = np.zeros(region.shape, np.uint8)
    if points is not None:
        cv2.fillConvexPoly(out, cv2.convexHull(points), 1)
    return out > 0
