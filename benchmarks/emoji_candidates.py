"""Which emoji can the embedded model drag? Candidates for the README's emoji example (issue #3, session 5).

    python benchmarks/emoji_candidates.py make DIR [--emoji-pack .carry/emoji_pack.npz]   # needs the pack
    python benchmarks/emoji_candidates.py run DIR --out OUT [--models PATH ...] [--device cuda] [--shift 20]

``make`` renders each candidate emoji the way `examples/emoji.png` is made (same background, place and size),
plus the bare background. ``run`` drags each with five handles (centre and four points at 3/4 of its
half-size) by ``--shift`` px to the right, ``dragdiffusion`` preset, and scores what a user sees: the object
(pixels that differ from the bare background) — how far its centroid moved and how much of it is left.
Writes OUT/emoji_candidates.{png,json} and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dragdiff.config import preset
from dragdiff.editor import DragEditor
from dragdiff.io import atomic_save_image, load_image, load_mask
from dragdiff.types import DragInstruction, Point
from dragdiff.viz import contact_sheet, draw_instruction

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = [
    "smiling face with sunglasses",
    "slightly smiling face",
    "red heart",
    "red apple",
    "tangerine",
    "basketball",
    "star",
    "cat face",
]
CENTRE, HALF, SIZE = (0.4, 0.5), 0.28, 128


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def make(folder: Path, pack_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    from make_examples import emoji_example  # noqa: PLC0415  (the examples' own recipe)

    from dragdiff.model import emoji, scenes

    pack = emoji.EmojiPack.load(pack_path)
    bg = scenes.Background(
        "stripes", "blue", scenes.PALETTE["blue"], (0.45, 0.58, 0.93), angle=0.6, scale=5.0, seed=1
    )
    bare = (scenes.render([scenes.Scene(bg, ())], SIZE)[0].clamp(0, 1) * 255).round().byte()
    bare_image = Image.fromarray(bare.permute(1, 2, 0).numpy())
    for name in CANDIDATES:
        out = folder / _slug(name)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_image(emoji_example(pack, name), out / "image.png")
        atomic_save_image(bare_image, out / "background.png")
        caption = f"{emoji.emoji_phrase(name)} {scenes.background_phrase(bg)}"
        (out / "case.json").write_text(json.dumps({"name": name, "prompt": caption}))
    print(f"wrote {len(CANDIDATES)} candidates to {folder}")


def handles() -> list[tuple[int, int]]:
    cx, cy, r = CENTRE[0] * SIZE, CENTRE[1] * SIZE, 0.75 * HALF * SIZE
    return [(round(cx + dx * r), round(cy + dy * r)) for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))]


def object_mass(image: Image.Image, bare: Image.Image) -> tuple[float, float]:
    """(centroid x, area) of the pixels that differ from the bare background."""
    a = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    b = np.asarray(bare.convert("RGB")).astype(np.float32) / 255
    ys, xs = np.nonzero(np.abs(a - b).max(axis=-1) > 0.25)
    return (float(xs.mean()), float(len(xs))) if len(xs) else (float("nan"), 0.0)


def run(folder: Path, out: Path, models: list[str | None], device: str | None, shift: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    mask = load_mask(ROOT / "examples" / "emoji_mask.png", (SIZE, SIZE))
    cases = sorted(p for p in folder.iterdir() if (p / "case.json").is_file())
    hs = [Point(*h) for h in handles()]
    gs = [Point(h.x + shift, h.y) for h in hs]
    header = [draw_instruction(load_image(c / "image.png"), hs, gs, mask) for c in cases]
    rows, records = [header], []
    config = preset("dragdiffusion")
    for model in models:
        editor = DragEditor(model=model, device=device)
        row = []
        for case in cases:
            meta = json.loads((case / "case.json").read_text())
            image, bare = load_image(case / "image.png"), load_image(case / "background.png")
            result = editor.edit(image, DragInstruction(tuple(hs), tuple(gs), mask, meta["prompt"]), config)
            (x0, a0), (x1, a1) = object_mass(image, bare), object_mass(result.image, bare)
            rec = {
                "model": str(model or "embedded"),
                "emoji": meta["name"],
                "shift_wanted": shift,
                "object_shift": round(x1 - x0, 1),
                "area_kept": round(a1 / max(a0, 1.0), 2),
                "handles_after": [list(p.as_tuple()) for p in result.final_handles],
            }
            records.append(rec)
            row.append(result.image)
            print(json.dumps(rec), flush=True)
        rows.append(row)
    (out / "emoji_candidates.json").write_text(json.dumps(records, indent=1))
    atomic_save_image(contact_sheet(rows, [c.name for c in cases], cell=160), out / "emoji_candidates.png")
    for r in records:
        moved = f"{r['object_shift']:>6} / {shift}"
        print(f"{r['model'][-24:]:24} {r['emoji']:30} {moved}  area {r['area_kept']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("folder", type=Path)
    m.add_argument("--emoji-pack", type=Path, default=ROOT / ".carry" / "emoji_pack.npz")
    r = sub.add_parser("run")
    r.add_argument("folder", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--models", nargs="*", default=[None])
    r.add_argument("--device", default=None)
    r.add_argument("--shift", type=int, default=20)
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.folder, args.emoji_pack)
    else:
        run(args.folder, args.out, args.models, args.device, args.shift)


if __name__ == "__main__":
    main()
