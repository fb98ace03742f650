"""The explicit warp of a drag (after Inpaint4Drag, arXiv 2509.04582): segment, deform, find the uncovered.

    1. support     the pixels that move, one part per object (``support.segment_support``), and the still
                   objects in front of them, which the moved content goes under (``depth.front_of``)
    2. field       MLS similarity per part, backward-mapped so the moved content has no cracks (``field``)
    3. plate       the background with every moved part removed: OpenCV's Telea fill of the old support
    4. composite   the moved parts (bilinear from the source, soft 1-px edge) over the plate

``WarpPlan.hole`` is what a diffusion model should repaint: pixels of the old support that the moved content
does not cover, plus a seam band of ``seam`` pixels. Every pixel outside ``plan.changed`` is the source's,
bit for bit; ``plan.front`` never changes. Pure numpy + OpenCV (no model): the warp preview of the web
editor is this module alone. Arrays are (H, W, 3) uint8 RGB images and (H, W) bool/int masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from dragdiff.geometry.depth import complete, front_of
from dragdiff.geometry.field import backward_maps, check_no_fold, part_maps
from dragdiff.geometry.shadow import shadow_maps
from dragdiff.geometry.support import (
    SEGMENT_MAX_SIDE,
    check_handles_editable,
    disc,
    handle_labels,
    segment_support,
)
from dragdiff.types import DragInstruction, InputError

EDGE_PX = 1  # the support is grown by this much so the object's anti-aliased edge moves with it
SEAM_OWN_SIZE = 1  # the seam where the support was segmented at the picture's own size (EDGE_PX has its edge)
SEAM_UPSAMPLED = 2  # ... and where it was segmented smaller and upsampled: an outline sure to a few px only
TELEA_RADIUS = 3


@dataclass
class WarpPlan:
    """Where everything goes. Images are at the size the plan was made for."""

    labels: np.ndarray  # (H, W) int32 source support: 0 stays, k moves with part k
    groups: np.ndarray  # (N,) part label of each handle
    map_x: np.ndarray  # (H, W) float32: output pixel -> source x (identity where nothing lands)
    map_y: np.ndarray
    landed: np.ndarray  # (H, W) int32: the part that lands on each output pixel (0 = none)
    alpha: np.ndarray  # (H, W) float32 in [0, 1]: opacity of the moved content over the plate
    hole: np.ndarray  # (H, W) bool: uncovered background (+ seam) for a model to repaint
    changed: np.ndarray  # (H, W) bool: every pixel the edit may change (outside it: the source exactly)
    shadow_old: np.ndarray  # (H, W) float32 darkening of the moved parts' drop shadows where they were
    shadow_new: np.ndarray  # (H, W) float32 the same where the parts' maps take them (``geometry.shadow``)
    front: np.ndarray  # (H, W) bool: still objects in front of the moved parts (kept; the parts go under)
    appearance: np.ndarray | None  # (H, W, 3) uint8 the source with what ``front`` hides of the parts
    # completed (``depth.complete``), what the moved content is sampled from; None: the source itself


def plan_warp(
    image: np.ndarray,
    instruction: DragInstruction,
    seam: int | None = None,
    labels: np.ndarray | None = None,
    two_point: str = "auto",
    shadows: bool = True,
    keep_depth: bool = True,
) -> WarpPlan:
    """Segment the dragged content and lay out the warp; InputError for a handle outside the mask, a handle on
    nothing that can move, or a fold. ``labels`` skips segmentation (a support the caller already has).
    ``keep_depth``: the moved content goes under the still objects in front of it (``depth.front_of``);
    False draws it over everything."""
    handles = np.array([p.as_tuple() for p in instruction.handles], np.float64)  # (N, 2) (x, y)
    targets = np.array([p.as_tuple() for p in instruction.targets], np.float64)
    mask = None if instruction.mask is None else np.asarray(instruction.mask, bool)
    seam = auto_seam(image.shape[:2]) if seam is None else seam
    check_handles_editable(handles, mask)
    if labels is None:
        labels = segment_support(image, handles, mask)
    if mask is not None:
        labels = np.where(mask, labels, 0)  # nothing outside the editable area moves
    if keep_depth:
        front, hidden = front_of(image, labels)
    else:
        front, hidden = np.zeros(labels.shape, bool), np.zeros(labels.shape, np.int32)
    if mask is not None:
        hidden = np.where(mask, hidden, 0)
    appearance = None
    if hidden.any():  # what the front objects hide moves with its part, completed
        appearance = complete(image, labels, hidden)
        labels = np.where(hidden > 0, hidden, labels)
    labels = _grow(labels, EDGE_PX, ~front if mask is None else mask & ~front)
    groups = handle_labels(labels, handles)
    if (groups == 0).any():
        i = int(np.nonzero(groups == 0)[0][0])
        raise InputError(
            f"handle {i + 1} at ({handles[i, 0]:g}, {handles[i, 1]:g}) is on nothing that can move"
        )
    maps = part_maps(labels, handles, targets, groups, two_point)
    check_no_fold(labels, maps, groups)
    map_x, map_y, landed = backward_maps(labels, maps)
    src_alpha = cv2.blur((labels > 0).astype(np.float32), (3, 3)) * (labels > 0)  # soft 1-px inner edge
    alpha = cv2.remap(src_alpha, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) * (
        (landed > 0) & ~front
    )
    covered = alpha > 0.99
    hole = (labels > 0) & ~covered
    if seam > 0 and hole.any():
        hole = cv2.dilate(hole.astype(np.uint8), disc(seam)) > 0
        hole &= ~covered
        if mask is not None:
            hole &= mask
    changed = hole | (landed > 0) | (labels > 0)
    if shadows:
        old, new = shadow_maps(image, labels, maps, mask)
    else:
        old = new = np.zeros(labels.shape, np.float32)
    changed |= (old > 0.004) | (new > 0.004)  # a shadow of 1/255 and more
    hole &= ~front
    changed &= ~front
    alpha = alpha.astype(np.float32)
    return WarpPlan(labels, groups, map_x, map_y, landed, alpha, hole, changed, old, new, front, appearance)


def auto_seam(hw: tuple[int, int]) -> int:
    """The seam (px) for a picture of size ``hw`` = (H, W) when none is asked for: narrow where the support is
    segmented at the picture's own size, wider where it is segmented smaller and upsampled
    (``segment_support``). On the 128-px ground-truth suites a narrower seam scores better on every seed; on
    2048-px photographs without a mask a wider one does (docs/methods.md)."""
    return SEAM_OWN_SIZE if max(hw) <= SEGMENT_MAX_SIDE else SEAM_UPSAMPLED


def background_plate(image: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """The source with every moved part (and the seam) filled from its surroundings (Telea fast marching)."""
    # the objects in front are filled over too (they are kept anyway): the fill reads the background only
    remove = ((plan.labels > 0) | plan.hole | plan.front).astype(np.uint8)
    if plan.shadow_old.any():  # the moved parts' shadows taken off first (``composite`` casts them anew)
        image = np.clip(np.round(image / (1 - plan.shadow_old[..., None])), 0, 255).astype(np.uint8)
    if not remove.any():
        return image.copy()
    # Telea reads only pixels within its radius of what it fills: run it on the box around those
    ys, xs = np.nonzero(remove)
    m = TELEA_RADIUS + 2
    y0, y1 = max(0, ys.min() - m), min(remove.shape[0], ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(remove.shape[1], xs.max() + m + 1)
    box = remove[y0:y1, x0:x1]
    bgr = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
    filled = cv2.inpaint(bgr, cv2.dilate(box, disc(1)), TELEA_RADIUS, cv2.INPAINT_TELEA)[..., ::-1]
    out = image.copy()
    out[y0:y1, x0:x1][box > 0] = filled[box > 0]
    return out


def composite(image: np.ndarray, plate: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """The moved content (sampled from ``image`` through the backward maps) over ``plate``."""
    out = image.copy()  # untouched means identical
    if not plan.changed.any():
        return out
    ys, xs = np.nonzero(plan.changed)
    box = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]  # nothing outside it changes
    src = image if plan.appearance is None else plan.appearance
    moved = cv2.remap(src, plan.map_x[box], plan.map_y[box], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    a = plan.alpha[box][..., None]
    shade = (1 - plan.shadow_new[box])[..., None]  # the parts' shadows where they went (the plate has none)
    blend = plate[box].astype(np.float32) * shade * (1 - a) + moved.astype(np.float32) * a
    changed = plan.changed[box]
    out[box][changed] = np.clip(np.round(blend), 0, 255).astype(np.uint8)[changed]
    return out


def warp_preview(
    image: Image.Image, instruction: DragInstruction, max_side: int | None = None, **plan_options: Any
) -> Image.Image:
    """The instant warp-only result (no model): the moved content over a classical fill of the uncovered.

    ``max_side``: compute it on the image (and instruction) scaled down to at most this long side — the
    returned preview then has that smaller size (the web editor shows it enlarged).
    """
    scale = 1.0 if max_side is None else min(1.0, max_side / max(image.size))
    if scale < 1.0:
        seam = plan_options.get("seam")
        seam = auto_seam((image.height, image.width)) if seam is None else seam  # the edit's seam
        image, instruction = _scaled(image, instruction, scale)
        plan_options["seam"] = round(seam * scale)
    arr = np.asarray(image.convert("RGB"))
    instruction.validate_for(image.width, image.height)
    try:
        plan = plan_warp(arr, instruction, **plan_options)
    except InputError as exc:
        if scale < 1.0:
            raise InputError(f"{exc} (in the {image.width}x{image.height} preview)") from None
        raise
    return Image.fromarray(composite(arr, background_plate(arr, plan), plan))


def _scaled(
    image: Image.Image, instruction: DragInstruction, scale: float
) -> tuple[Image.Image, DragInstruction]:
    """The image and its instruction at ``scale`` (< 1); handles stay editable in the smaller mask."""
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    sx, sy = size[0] / image.width, size[1] / image.height

    def small(p: tuple[float, float]) -> tuple[float, float]:
        x = min(max((p[0] + 0.5) * sx - 0.5, 0.0), size[0] - 1.0)
        return (x, min(max((p[1] + 0.5) * sy - 0.5, 0.0), size[1] - 1.0))

    pairs = [
        (small(h.as_tuple()), small(g.as_tuple()))
        for h, g in zip(instruction.handles, instruction.targets, strict=True)
    ]
    mask = None
    if instruction.mask is not None:
        m = Image.fromarray(np.asarray(instruction.mask, np.uint8) * 255).resize(
            size, Image.Resampling.NEAREST
        )
        mask = np.asarray(m) > 127
        for (x, y), _ in pairs:
            mask[round(y), round(x)] = True
    out = DragInstruction.from_pairs(pairs, mask=mask, prompt=instruction.prompt)
    small_image = cv2.resize(np.asarray(image.convert("RGB")), size, interpolation=cv2.INTER_AREA)
    return Image.fromarray(small_image), out  # the area filter: the one to shrink with, 10x PIL's Lanczos


def _grow(labels: np.ndarray, px: int, mask: np.ndarray | None) -> np.ndarray:
    """Each part grown by ``px`` into the background (parts never overwrite each other), inside the mask."""
    if px <= 0:
        return labels
    out = labels.copy()
    for k in np.unique(labels[labels > 0]):
        grown = cv2.dilate((labels == k).astype(np.uint8), disc(px)) > 0
        add = grown & (out == 0)
        if mask is not None:
            add &= mask
        out[add] = k
    return out
