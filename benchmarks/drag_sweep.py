"""Drag edits of the bundled examples under a few settings, for judging the embedded model (issue #3).

    python benchmarks/drag_sweep.py --out DIR [--model PATH] [--budget-s 380] [--variants NAME ...]

Each variant is a list of ``--set`` overrides on the ``dragdiffusion`` preset. Writes DIR/sweep.png
(rows = examples, columns = input + drag | one result per variant), DIR/sweep.json (tracked handles,
iterations, timings per edit) and prints a table. Variants run in order until the time budget is spent;
one editor (and its LoRA cache) serves them all, so variants that share the LoRA settings reuse its LoRA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dragdiff.config import preset
from dragdiff.editor import DragEditor
from dragdiff.io import atomic_save_image, load_image, load_mask
from dragdiff.types import DragInstruction, Point
from dragdiff.viz import contact_sheet, draw_instruction

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "sample": ("sample.png", "sample_mask.png", (48, 64), (78, 64), "a red star on a white background"),
    "emoji": (
        "emoji.png",
        "emoji_mask.png",
        (51, 64),
        (81, 64),
        "a smiling face with sunglasses emoji on a striped blue background",
    ),
}
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "recon (0 it)": ["drag.max_iterations=0"],
    "strength 0.5": ["inversion.strength=0.5"],
    "lora 200": ["lora.steps=200"],
    "160 it": ["drag.max_iterations=160"],
    "no ref ctrl": ["denoise.reference_control=false"],
    "drag lr 0.02": ["drag.lr=0.02"],
    # session 5 (benchmarks/embedded_drag_sweep.sh runs the same on the ground-truth suite)
    "no lora": ["lora.enabled=false"],
    "rank 4": ["lora.rank=4"],
    "strength 0.8": ["inversion.strength=0.8"],
    "feature block 1": ["drag.feature_up_block=1"],
    "r_m 2": ["drag.r_m=2"],
    "ctrl levels 1": ["denoise.control_levels=1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--budget-s", type=float, default=380.0)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], help="override added to every variant (smoke runs)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    editor = DragEditor(model=args.model, device=args.device)
    records: list[dict] = []
    rows = []
    for name, (img, mask, h, g, prompt) in EXAMPLES.items():
        image = load_image(ROOT / "examples" / img)
        m = load_mask(ROOT / "examples" / mask, image.size)
        instruction = DragInstruction((Point(*h),), (Point(*g),), m, prompt)
        rows.append([draw_instruction(image, [Point(*h)], [Point(*g)], m)])
        for variant in args.variants:
            if time.monotonic() - t0 > args.budget_s:
                print(f"budget spent: skipping {name}/{variant}", flush=True)
                continue
            config = preset("dragdiffusion").with_overrides(VARIANTS[variant] + args.set)
            t = time.monotonic()
            result = editor.edit(image, instruction, config)
            seconds = time.monotonic() - t
            rows[-1].append(result.image)
            atomic_save_image(result.image, args.out / f"{name}-{variant.replace(' ', '_')}.png")
            rec = {
                "example": name,
                "variant": variant,
                "overrides": VARIANTS[variant],
                "handle_after": [list(p.as_tuple()) for p in result.final_handles],
                "target": list(g),
                "iterations": result.iterations,
                "seconds": round(seconds, 2),
                "timings": {k: round(v, 2) for k, v in result.timings.items()},
            }
            records.append(rec)
            print(json.dumps(rec), flush=True)
            (args.out / "sweep.json").write_text(json.dumps(records, indent=1))
    width = max(len(r) for r in rows)
    rows = [r + [r[0].copy()] * (width - len(r)) for r in rows]
    done = ["input + drag"] + list(args.variants)[: width - 1]
    atomic_save_image(contact_sheet(rows, done, cell=192), args.out / "sweep.png")
    print(f"{'example':8} {'variant':14} {'handle after':>16} {'target':>10} {'it':>4} {'s':>6}")
    for r in records:
        ha = ",".join(f"{v:.0f}" for v in r["handle_after"][0])
        print(
            f"{r['example']:8} {r['variant']:14} {ha:>16} {str(r['target']):>10} {r['iterations']:>4} "
            f"{r['seconds']:>6}"
        )


if __name__ == "__main__":
    main()
