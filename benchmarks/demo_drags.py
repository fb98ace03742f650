"""Which drag instruction moves the bundled examples' content on a given model? (issue #3, session 5)

    python benchmarks/demo_drags.py --out DIR [--models PATH ...] [--device cuda] [--set section.field=v ...]

Edits `examples/sample.png` (red star) and `examples/emoji.png` under several instructions — the handle on the
flat centre, on the star's five tips, shorter drags — with the ``dragdiffusion`` preset, on each model. Scores
what a user sees: where the coloured mass of the object went (centroid shift along the drag, in px; the
instructions ask for +30 px or +20 px) and how much of it survived (area ratio after/before), plus, for the
star moves, PSNR against the exact target (`examples/sample_moved.png`, +30 px). Writes DIR/demo_drags.png
(rows = models, columns = instructions), DIR/demo_drags.json, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dragdiff.bench.metrics import to_tensor
from dragdiff.config import preset
from dragdiff.editor import DragEditor
from dragdiff.io import atomic_save_image, load_image, load_mask
from dragdiff.metrics import psnr
from dragdiff.types import DragInstruction, Point
from dragdiff.viz import contact_sheet, draw_instruction

ROOT = Path(__file__).resolve().parent.parent
STAR_TIPS = [(47, 39), (24, 56), (71, 56), (33, 84), (62, 84)]  # top, left, right, bottom-left, bottom-right
STAR = ("sample.png", "sample_mask.png", "a red star on a white background")
EMOJI = ("emoji.png", "emoji_mask.png", "a smiling face with sunglasses emoji on a striped blue background")


def _shift(points: list[tuple[int, int]], dx: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [((x, y), (x + dx, y)) for x, y in points]


INSTRUCTIONS: dict[str, tuple[tuple[str, str, str], list[tuple[tuple[int, int], tuple[int, int]]], int]] = {
    # name: (example, pairs, intended shift of the object in px)
    "star centre +30": (STAR, _shift([(48, 64)], 30), 30),
    "star 5 tips +30": (STAR, _shift(STAR_TIPS, 30), 30),
    "star centre+tips +30": (STAR, _shift([(48, 64), *STAR_TIPS], 30), 30),
    "star centre +20": (STAR, _shift([(48, 64)], 20), 20),
    "star 5 tips +20": (STAR, _shift(STAR_TIPS, 20), 20),
    "emoji centre +30": (EMOJI, _shift([(51, 64)], 30), 30),
    "emoji 3 points +30": (EMOJI, _shift([(38, 58), (62, 58), (50, 80)], 30), 30),
    "emoji 3 points +20": (EMOJI, _shift([(38, 58), (62, 58), (50, 80)], 20), 20),
}


def colour_mass(image: Image.Image, example: str) -> tuple[float, float]:
    """(centroid x, area) of the object's colour: the star's red, the emoji's yellow."""
    a = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    if example == STAR[0]:
        m = (r > 0.55) & (g < 0.45) & (b < 0.45)
    else:
        m = (r > 0.7) & (g > 0.5) & (b < 0.4)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return float("nan"), 0.0
    return float(xs.mean()), float(len(xs))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", nargs="*", default=[None], help="model folders (default: the embedded model)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--instructions", nargs="*", default=list(INSTRUCTIONS))
    ap.add_argument("--set", action="append", default=[], help="config override for every edit")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = preset("dragdiffusion").with_overrides(args.set)
    moved = load_image(ROOT / "examples" / "sample_moved.png")
    header: list[Image.Image] = []
    for name in args.instructions:
        (img, mask, _), pairs, _ = INSTRUCTIONS[name]
        image = load_image(ROOT / "examples" / img)
        m = load_mask(ROOT / "examples" / mask, image.size)
        header.append(
            draw_instruction(image, [Point(*h) for h, _ in pairs], [Point(*g) for _, g in pairs], m)
        )
    rows, records = [header], []
    for model in args.models:
        editor = DragEditor(model=model, device=args.device)
        row = []
        for name in args.instructions:
            (img, mask, prompt), pairs, intended = INSTRUCTIONS[name]
            image = load_image(ROOT / "examples" / img)
            m = load_mask(ROOT / "examples" / mask, image.size)
            instruction = DragInstruction(
                tuple(Point(*h) for h, _ in pairs), tuple(Point(*g) for _, g in pairs), m, prompt
            )
            t = time.monotonic()
            result = editor.edit(image, instruction, config)
            x0, area0 = colour_mass(image, img)
            x1, area1 = colour_mass(result.image, img)
            rec = {
                "model": str(model or "embedded"),
                "instruction": name,
                "pairs": pairs,
                "intended_shift": intended,
                "object_shift": round(x1 - x0, 1),
                "area_kept": round(area1 / max(area0, 1.0), 2),
                "handles_after": [list(p.as_tuple()) for p in result.final_handles],
                "iterations": result.iterations,
                "seconds": round(time.monotonic() - t, 2),
            }
            if img == STAR[0] and intended == 30:
                rec["psnr_vs_exact"] = round(psnr(to_tensor(result.image), to_tensor(moved)), 2)
            records.append(rec)
            row.append(result.image)
            print(json.dumps(rec), flush=True)
            (args.out / "demo_drags.json").write_text(json.dumps(records, indent=1))
        rows.append(row)
    atomic_save_image(contact_sheet(rows, list(args.instructions), cell=160), args.out / "demo_drags.png")
    print(f"{'model':28} {'instruction':24} {'shift':>6} {'want':>5} {'area':>5} {'psnr':>6} {'it':>3}")
    for r in records:
        print(
            f"{r['model'][-28:]:28} {r['instruction']:24} {r['object_shift']:>6} {r['intended_shift']:>5} "
            f"{r['area_kept']:>5} {r.get('psnr_vs_exact', ''):>6} {r['iterations']:>3}"
        )


if __name__ == "__main__":
    main()
