"""Compose the README's photograph figure: before | after at full size, and 1:1 crops of the edited region.

    python scripts/readme_photo.py OUT.webp INPUT MASK EDITED RECORD.json

The top row shows the input with the drag drawn as DragBench draws it and the edit, both at the photo's own
pixels with the region of interest outlined (``RECORD.json``'s ``roi``); the bottom row the region itself,
before and after, at 1:1 and at 2x (nearest neighbour, so single pixels show).
"""

from __future__ import annotations

import json
import sys

from PIL import Image, ImageDraw

from dragdiff.io import atomic_save_image, load_image, load_mask
from dragdiff.types import Point
from dragdiff.viz import _font, draw_instruction, draw_roi

GAP = 8
LABEL = 24


def labelled(image: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + LABEL), (255, 255, 255))
    out.paste(image, (0, LABEL))
    ImageDraw.Draw(out).text((4, LABEL // 2), text, fill=(0, 0, 0), font=_font(14), anchor="lm")
    return out


def hstack(images: list[Image.Image]) -> Image.Image:
    width = sum(im.width for im in images) + GAP * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + GAP
    return out


def vstack(images: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (max(im.width for im in images), sum(im.height for im in images) + GAP), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + GAP
    return out


def main(argv: list[str]) -> None:
    out, src_path, mask_path, edited_path, record_path = argv
    source, edited = load_image(src_path), load_image(edited_path)
    record = json.loads(open(record_path, encoding="utf-8").read())
    box = record["roi"]
    handles = [Point(*p) for p in record["instruction"]["handles"]]
    targets = [Point(*p) for p in record["instruction"]["targets"]]
    mask = load_mask(mask_path, source.size)
    before = draw_roi(draw_instruction(source, handles, targets, mask), box)
    after = draw_roi(edited, box)
    w, h = box[2] - box[0], box[3] - box[1]
    crops = [im.crop(box) for im in (source, edited)]
    zoomed = [c.resize((2 * w, 2 * h), Image.Resampling.NEAREST) for c in crops]
    top = hstack(
        [labelled(before, "input, drag and mask"), labelled(after, "edited (amber: the region edited)")]
    )
    bottom = hstack(
        [
            labelled(crops[0], "region, before, 1:1"),
            labelled(crops[1], "after, 1:1"),
            labelled(zoomed[0], "before, 2x"),
            labelled(zoomed[1], "after, 2x"),
        ]
    )
    atomic_save_image(vstack([top, bottom]), out)


if __name__ == "__main__":
    main(sys.argv[1:])
