"""Compose the README's before/after figure from edits made with the commands in README.md.

    python scripts/readme_figure.py OUT.png  INPUT MASK HANDLES TARGETS EDITED [TRUTH] [-- INPUT MASK ...]

HANDLES and TARGETS are ``x,y`` points joined by ``;`` (one per drag pair). Each group is one row: the input
with the instruction drawn as DragBench draws it | the edit | the exact ground truth when there is one.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from dragdiff.io import atomic_save_image, load_image, load_mask
from dragdiff.types import Point
from dragdiff.viz import contact_sheet, draw_instruction


def row(args: list[str]) -> list[Image.Image]:
    image = load_image(args[0])
    mask = load_mask(args[1], image.size) if args[1] != "-" else None
    handles, targets = ([Point.parse(p) for p in a.split(";")] for a in args[2:4])
    cells = [draw_instruction(image, handles, targets, mask), load_image(args[4])]
    if len(args) > 5:
        cells.append(load_image(args[5]))
    else:
        cells.append(Image.fromarray(np.full((image.height, image.width, 3), 255, np.uint8)))
    return cells


def main(argv: list[str]) -> None:
    out, rest = argv[0], argv[1:]
    groups, current = [], []
    for a in rest:
        if a == "--":
            groups.append(current)
            current = []
        else:
            current.append(a)
    groups.append(current)
    sheet = contact_sheet([row(g) for g in groups], ["input + drag", "dragdiff", "exact target"], cell=256)
    atomic_save_image(sheet, out)


if __name__ == "__main__":
    main(sys.argv[1:])
