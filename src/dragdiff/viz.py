"""Pictures of drags: the instruction overlay, tracking frames and contact sheets (Pillow + numpy only).

The instruction overlay follows DragBench's ``user_drag.png``: the area outside the editable mask is dimmed,
a red dot marks each handle, a blue dot each target, and a white arrow runs from handle to target.
Dot sizes scale with the image so the picture reads the same at 64 px and at 1024 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dragdiff.types import DragInstruction, InputError, Point

HANDLE = (255, 0, 0)
TARGET = (0, 0, 255)
ARROW = (255, 255, 255)
OUTLINE = (255, 255, 255)
ROI = (255, 200, 0)  # the outline of the region an edit ran on (``draw_roi``)
DIM = 0.45  # brightness kept outside the editable region
LABEL_HEIGHT = 28  # px band above each contact-sheet column

XY = tuple[float, float]


def _xy(points: Sequence[Point] | Sequence[XY] | np.ndarray | Any) -> list[XY]:
    """Points as a list of (x, y) floats, from Points, pairs or an (N, 2) array/tensor."""
    if hasattr(points, "tolist") and not isinstance(points, list | tuple):
        points = points.tolist()
    return [p.as_tuple() if isinstance(p, Point) else (float(p[0]), float(p[1])) for p in points]


def dot_radius(size: tuple[int, int]) -> int:
    """Marker radius for an image of this (width, height): ~1/64 of the short side, at least 2 px."""
    return max(2, round(min(size) / 64))


def _dot(draw: ImageDraw.ImageDraw, p: XY, r: int, fill: tuple[int, int, int] | None, width: int = 1) -> None:
    box = (p[0] - r, p[1] - r, p[0] + r, p[1] + r)
    if fill is None:
        draw.ellipse(box, outline=HANDLE, width=width)
    else:
        draw.ellipse(box, fill=fill, outline=OUTLINE, width=width)


def _arrow(draw: ImageDraw.ImageDraw, start: XY, end: XY, r: int, colour: tuple[int, int, int]) -> None:
    """A line from ``start`` to the edge of the target dot at ``end``, its arrow head touching that edge."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length <= 2 * r:
        return  # the dots already overlap; an arrow would hide them
    ux, uy = dx / length, dy / length
    tip = (end[0] - ux * (r + 1), end[1] - uy * (r + 1))
    head = 2.2 * r
    base = (tip[0] - ux * head, tip[1] - uy * head)
    width = max(1, round(r / 2.5))
    draw.line([(start[0] + ux * r, start[1] + uy * r), base], fill=colour, width=width)
    left = (base[0] - uy * head * 0.6, base[1] + ux * head * 0.6)
    right = (base[0] + uy * head * 0.6, base[1] - ux * head * 0.6)
    draw.polygon([tip, left, right], fill=colour)


def _dim_outside(image: Image.Image, mask: np.ndarray) -> Image.Image:
    m = np.asarray(mask).astype(bool)
    if m.shape != (image.height, image.width):
        size = f"{m.shape[1]}x{m.shape[0]}" if m.ndim == 2 else f"of shape {m.shape}"
        raise InputError(f"mask is {size} but the image is {image.width}x{image.height} (W x H)")
    arr = np.asarray(image, dtype=np.float32)
    arr = np.where(m[..., None], arr, arr * DIM)
    return Image.fromarray(np.round(arr).astype(np.uint8), "RGB")


def draw_instruction(
    image: Image.Image,
    handles: Sequence[Point] | Sequence[XY] | DragInstruction | Any,
    targets: Sequence[Point] | Sequence[XY] | Any = None,
    mask: np.ndarray | None = None,
) -> Image.Image:
    """DragBench-style picture of a drag: dimmed outside the mask, red handles, blue targets, white arrows.

    ``handles`` may also be a whole ``DragInstruction`` (then ``targets`` and ``mask`` come from it).
    """
    if isinstance(handles, DragInstruction):
        instruction = handles
        handles, targets, mask = instruction.handles, instruction.targets, instruction.mask
    hs, gs = _xy(handles), _xy(targets if targets is not None else [])
    if len(hs) != len(gs):
        raise InputError(f"handles and targets must pair up, got {len(hs)} handles and {len(gs)} targets")
    out = image.convert("RGB")
    if mask is not None:
        out = _dim_outside(out, mask)
    draw = ImageDraw.Draw(out)
    r = dot_radius(out.size)
    for h, g in zip(hs, gs, strict=True):
        _arrow(draw, h, g, r, ARROW)
    for h, g in zip(hs, gs, strict=True):
        _dot(draw, h, r, HANDLE)
        _dot(draw, g, r, TARGET)
    return out


def draw_tracking(
    image: Image.Image,
    handles: Sequence[Point] | Sequence[XY] | Any,
    targets: Sequence[Point] | Sequence[XY] | Any,
    current: Sequence[Point] | Sequence[XY] | Any,
) -> Image.Image:
    """One animation frame: a thin line from each tracked handle (red) to its target (blue).

    The original handle positions are drawn as hollow red rings so the distance travelled shows.
    """
    hs, gs, cs = _xy(handles), _xy(targets), _xy(current)
    if not len(hs) == len(gs) == len(cs):
        raise InputError(f"got {len(hs)} handles, {len(gs)} targets and {len(cs)} current points")
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    r = dot_radius(out.size)
    for h, g, c in zip(hs, gs, cs, strict=True):
        draw.line([c, g], fill=ARROW, width=max(1, r // 3))
        _dot(draw, h, r, None, width=max(1, r // 3))
    for g, c in zip(gs, cs, strict=True):
        _dot(draw, g, r, TARGET)
        _dot(draw, c, r, HANDLE)
    return out


def draw_roi(image: Image.Image, box: Sequence[float], scale: float = 1.0) -> Image.Image:
    """``image`` with the edit's region of interest outlined (amber, dashed with black so it shows on any
    colour); ``box`` (x0, y0, x1, y1) in pixels of the picture ``image`` shows at ``scale``."""
    out = image.convert("RGB")
    x0, y0, x1, y1 = (v * scale for v in box)
    x1, y1 = x1 - 1, y1 - 1  # exclusive -> the last pixel inside
    width = max(1, round(max(out.size) / 400))
    dash = 6 * width
    draw = ImageDraw.Draw(out)
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for i, start in enumerate(np.arange(0, max(length, 1), dash)):
            end = min(start + dash, length)
            f0, f1 = start / max(length, 1), end / max(length, 1)
            p0 = (a[0] + (b[0] - a[0]) * f0, a[1] + (b[1] - a[1]) * f0)
            p1 = (a[0] + (b[0] - a[0]) * f1, a[1] + (b[1] - a[1]) * f1)
            draw.line([p0, p1], fill=ROI if i % 2 == 0 else (0, 0, 0), width=width)
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def contact_sheet(
    rows: Sequence[Sequence[Image.Image]], labels: Sequence[str] | None = None, cell: int = 256
) -> Image.Image:
    """A grid of images, each fitted into a ``cell``-px square keeping its aspect; labels over the columns."""
    if not rows or not any(rows):
        raise InputError("a contact sheet needs at least one image")
    if cell < 8:
        raise InputError(f"cell must be at least 8 px, got {cell}")
    ncols = max(len(r) for r in rows)
    if labels is not None and len(labels) != ncols:
        raise InputError(f"got {len(labels)} labels for {ncols} columns")
    top = LABEL_HEIGHT if labels else 0
    sheet = Image.new("RGB", (ncols * cell, top + len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if labels:
        font = _font(LABEL_HEIGHT // 2)
        for j, text in enumerate(labels):
            fitted = _fit_text(draw, str(text), font, cell - 8)
            draw.text((j * cell + cell / 2, top / 2), fitted, fill=(0, 0, 0), font=font, anchor="mm")
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            thumb = ImageOps.contain(im.convert("RGB"), (cell, cell))
            x = j * cell + (cell - thumb.width) // 2
            y = top + i * cell + (cell - thumb.height) // 2
            sheet.paste(thumb, (x, y))
    return sheet
