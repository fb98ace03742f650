"""The region of interest: the part of a large image an edit runs on; every other pixel stays the input's.

A model runs at its native size (512 px for SD 1.5, 64-128 px for the embedded model). Editing a 4000x2667
photo as a whole means scaling it down to that size and back up, which blurs every pixel. Instead the editor
crops a box around the drag (``choose_roi``), edits the crop (resized to the work size inside, as before) and
pastes the result back into the untouched full-resolution original with a feathered seam (``paste_roi``).

``spec`` (``DragEditor.edit(..., roi=...)``, ``dragdiff edit --roi``):
    "auto"             the box of handles, targets and mask plus a margin, grown to the work size's aspect
                       and to at least the model's native size where the image allows (``choose_roi``);
                       without a mask it also holds the dragged object, before and after the move, as a
                       segmentation of a thumbnail estimates it (``support_box``): a box around the points
                       alone would cut through the object and leave most of it behind
    "full"             the whole image (the behaviour before ROIs)
    "X0,Y0,X1,Y1"      an explicit box in image pixels, X1/Y1 exclusive; it must hold every handle and target
Boxes are (x0, y0, x1, y1) ints, x1 and y1 exclusive. Pure numpy/PIL, no torch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from dragdiff.geometry.support import segment_support
from dragdiff.ops.points import work_size
from dragdiff.types import MIN_IMAGE_SIDE, DragInstruction, InputError, Point

__all__ = ["Box", "choose_roi", "crop_instruction", "paste_roi", "shift_points"]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, image px

MARGIN_DRAG = 0.25  # margin around the drag: a quarter of the longest drag ...
MARGIN_SIDE = 0.1  # ... or a tenth of the box's longer side ...
MARGIN_MIN_PX = 8  # ... or 8 px, whichever is largest
SUPPORT_SIDE = 256  # long side of the thumbnail the object's extent is estimated on (no mask)
SUPPORT_GROW = 0.25  # the estimate's box grown by this share of its size on each side (it is coarse)
SEAM_PX = 4  # width of the feathered seam inside the box (image px), where the edit fades into the original


def choose_roi(
    image_size: tuple[int, int],
    instruction: DragInstruction,
    native: int,
    multiple: int,
    spec: str = "auto",
    picture: Image.Image | None = None,
) -> Box:
    """The box to edit for ``spec`` ("auto", "full" or "X0,Y0,X1,Y1"); ``image_size`` is (W, H).

    ``picture``: the image itself; with it, "auto" without a mask also holds the dragged object
    (``support_box``)."""
    width, height = image_size
    text = spec.strip().lower() if isinstance(spec, str) else spec
    if text == "full":
        return (0, 0, width, height)
    if text == "auto":
        extra = (
            support_box(picture, instruction) if picture is not None and instruction.mask is None else None
        )
        return _auto_box(width, height, instruction, native, multiple, extra)
    if not isinstance(spec, str):
        raise InputError(f"roi must be 'auto', 'full' or 'X0,Y0,X1,Y1', got {spec!r}")
    return _explicit_box(spec, width, height, instruction)


def _points_box(instruction: DragInstruction) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) covering handles, targets and the mask's editable pixels (x1/y1 inclusive)."""
    xy = np.array([p.as_tuple() for p in (*instruction.handles, *instruction.targets)])  # (2N, 2)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    if instruction.mask is not None:
        mask = np.asarray(instruction.mask, bool)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            x0, x1 = min(x0, cols[0]), max(x1, cols[-1])
            y0, y1 = min(y0, rows[0]), max(y1, rows[-1])
    return float(x0), float(y0), float(x1), float(y1)


def support_box(
    picture: Image.Image, instruction: DragInstruction
) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) inclusive around the parts the handles sit on, where they are and where the drags
    take them: ``segment_support`` on a thumbnail of at most ``SUPPORT_SIDE`` px, its box grown by
    ``SUPPORT_GROW``. None if the estimate finds nothing. Costs a thumbnail and a 128-px GrabCut."""
    width, height = picture.size
    factor = max(1, max(width, height) // SUPPORT_SIDE)
    small = picture.convert("RGB").reduce(factor) if factor > 1 else picture.convert("RGB")  # box filter
    sx, sy = small.width / width, small.height / height
    xy = np.array([p.as_tuple() for p in instruction.handles], np.float64)  # (N, 2)
    xy = np.clip((xy + 0.5) * [sx, sy] - 0.5, 0, [small.width - 1, small.height - 1])
    labels = segment_support(np.asarray(small), xy)
    rows, cols = np.flatnonzero((labels > 0).any(axis=1)), np.flatnonzero((labels > 0).any(axis=0))
    if not rows.size:
        return None
    x0, x1 = cols[0] / sx, (cols[-1] + 1) / sx - 1
    y0, y1 = rows[0] / sy, (rows[-1] + 1) / sy - 1
    gx, gy = SUPPORT_GROW * (x1 - x0 + 1), SUPPORT_GROW * (y1 - y0 + 1)
    x0, y0, x1, y1 = x0 - gx, y0 - gy, x1 + gx, y1 + gy
    moves = [(t.x - h.x, t.y - h.y) for h, t in zip(instruction.handles, instruction.targets, strict=True)]
    dx0, dy0 = min(0.0, *(d[0] for d in moves)), min(0.0, *(d[1] for d in moves))
    dx1, dy1 = max(0.0, *(d[0] for d in moves)), max(0.0, *(d[1] for d in moves))
    return (max(0.0, x0 + dx0), max(0.0, y0 + dy0), min(width - 1.0, x1 + dx1), min(height - 1.0, y1 + dy1))


def _auto_box(
    width: int,
    height: int,
    instruction: DragInstruction,
    native: int,
    multiple: int,
    extra: tuple[float, float, float, float] | None = None,
) -> Box:
    x0, y0, x1, y1 = _points_box(instruction)
    if extra is not None:  # the dragged object's estimated extent, before and after
        x0, y0 = min(x0, extra[0]), min(y0, extra[1])
        x1, y1 = max(x1, extra[2]), max(y1, extra[3])
    pairs = zip(instruction.handles, instruction.targets, strict=True)
    drags = [math.dist(h.as_tuple(), t.as_tuple()) for h, t in pairs]
    margin = max(MARGIN_DRAG * max(drags), MARGIN_SIDE * max(x1 - x0, y1 - y0), MARGIN_MIN_PX)
    box_w = x1 - x0 + 1 + 2 * margin
    box_h = y1 - y0 + 1 + 2 * margin
    least = max(native, MIN_IMAGE_SIDE)  # at least the native size: never run the model on less detail
    box_w, box_h = max(box_w, least), max(box_h, least)
    work_w, work_h = work_size(math.ceil(box_w), math.ceil(box_h), native, multiple)
    aspect = work_w / work_h  # grow the short side so the crop is not stretched when it is resized
    box_w, box_h = max(box_w, box_h * aspect), max(box_h, box_w / aspect)
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    bx0, bx1 = _fit_span(cx, box_w, width)
    by0, by1 = _fit_span(cy, box_h, height)
    return (bx0, by0, bx1, by1)


def _fit_span(center: float, length: float, limit: int) -> tuple[int, int]:
    """[start, end) of ``length`` around ``center``, shifted (not cut) to stay within [0, limit)."""
    size = min(limit, math.ceil(length))
    start = round(center - size / 2)
    start = min(max(start, 0), limit - size)
    return start, start + size


def _explicit_box(spec: str, width: int, height: int, instruction: DragInstruction) -> Box:
    parts = spec.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (int(float(v)) for v in parts)
    except ValueError:
        raise InputError(f"roi must be 'auto', 'full' or 'X0,Y0,X1,Y1' (pixels), got {spec!r}") from None
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(
            f"roi {spec!r} is empty or outside the {width}x{height} image (need 0 <= X0 < X1 <= {width}, "
            f"0 <= Y0 < Y1 <= {height})"
        )
    if min(x1 - x0, y1 - y0) < MIN_IMAGE_SIDE:
        raise InputError(f"roi {spec!r} is {x1 - x0}x{y1 - y0} px; it needs at least {MIN_IMAGE_SIDE} a side")
    for kind, pts in (("handle", instruction.handles), ("target", instruction.targets)):
        for i, p in enumerate(pts):
            if not (x0 <= p.x <= x1 - 1 and y0 <= p.y <= y1 - 1):
                raise InputError(f"roi {spec!r} does not contain {kind} {i + 1} at ({p.x:g}, {p.y:g})")
    return (x0, y0, x1, y1)


def shift_points(points: tuple[Point, ...], dx: float, dy: float) -> tuple[Point, ...]:
    return tuple(Point(p.x + dx, p.y + dy) for p in points)


def crop_instruction(instruction: DragInstruction, box: Box) -> DragInstruction:
    """The instruction in the box's coordinates: points shifted by (-x0, -y0), the mask cropped."""
    x0, y0, x1, y1 = box
    mask = None if instruction.mask is None else np.asarray(instruction.mask)[y0:y1, x0:x1]
    return dataclasses.replace(
        instruction,
        handles=shift_points(instruction.handles, -x0, -y0),
        targets=shift_points(instruction.targets, -x0, -y0),
        mask=mask,
    )


def seam_weight(box: Box, image_size: tuple[int, int], seam_px: int = SEAM_PX) -> np.ndarray:
    """(h, w) float32 weight of the edit inside ``box``: 1 inside, falling towards each box edge that is
    not the image's own edge (there nothing lies beyond, so no seam is needed), never 0 inside the box."""
    x0, y0, x1, y1 = box
    width, height = image_size

    def ramp(n: int, soft_start: bool, soft_end: bool) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        w = np.ones(n, np.float32)
        if soft_start:
            w = np.minimum(w, (i + 1) / (seam_px + 1))
        if soft_end:
            w = np.minimum(w, (n - i) / (seam_px + 1))
        return w

    wx = ramp(x1 - x0, x0 > 0, x1 < width)  # (w,)
    wy = ramp(y1 - y0, y0 > 0, y1 < height)  # (h,)
    return np.minimum(wy[:, None], wx[None, :])  # (h, w)


def paste_roi(source: Image.Image, edited_crop: Image.Image, box: Box, seam_px: int = SEAM_PX) -> Image.Image:
    """``source`` with ``edited_crop`` blended into ``box``: every pixel outside the box is the source's,
    and a pixel the crop did not change stays the source's bit for bit.

    Cost bounded by the crop: one copy of the source, the crop pasted, and the blend computed only on the
    seam's frame (``seam_px`` wide); inside it the weight is 1, so the crop's pixels are taken as they are."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    out = np.array(edited_crop.convert("RGB"))  # (h, w, 3) uint8, a copy
    if out.shape[:2] != (h, w):
        raise ValueError(f"edited crop is {out.shape[1]}x{out.shape[0]}, box is {w}x{h}")
    weight = seam_weight(box, source.size, seam_px)  # (h, w)
    src = np.asarray(source.crop(box).convert("RGB"))  # (h, w, 3)
    s = min(seam_px, h, w)
    for rows, cols in (
        (slice(0, s), slice(None)),
        (slice(h - s, h), slice(None)),
        (slice(None), slice(0, s)),
        (slice(None), slice(w - s, w)),
    ):
        a, b = src[rows, cols].astype(np.float32), out[rows, cols].astype(np.float32)
        wt = weight[rows, cols][..., None]
        out[rows, cols] = np.clip(np.rint(a + (b - a) * wt), 0, 255).astype(np.uint8)
    full = source.convert("RGB") if source.mode != "RGB" else source.copy()
    full.paste(Image.fromarray(out), (x0, y0))
    return full
