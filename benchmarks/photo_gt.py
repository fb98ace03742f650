"""Photograph-sized ground truth (issue #20): the default method on >= 2048-px textured scenes, scored at full
resolution (``dragdiff.bench.photo_gt``).

    python benchmarks/photo_gt.py [--count 18] [--seed 0] [--size 2048x1536] [--preset warp] [--json OUT.json]
    [--set SECTION.FIELD=VALUE ...]

Each case: a textured object moved by a whole-pixel drag on a textured background; the edit runs through
``DragEditor.edit`` with ``roi="auto"`` on the embedded model (CPU unless --device). Prints one row per case
and the means for the masked and the mask-free cases; writes JSON (per case and the means).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dragdiff.bench import photo_gt as pg
from dragdiff.config import EditConfig, preset
from dragdiff.editor import DragEditor

KEYS = ("handle_error", "psnr_in", "psnr_in_away", "keep_psnr_out", "keep_exact_out", "seconds")


def run_case(
    editor: DragEditor, seed: int, index: int, size: tuple[int, int], config: EditConfig
) -> dict[str, Any]:
    rendered = pg.render_case(pg.make_case(seed, index, size))
    start = time.perf_counter()
    result = editor.edit(Image.fromarray(rendered.source), rendered.instruction(), config)
    seconds = time.perf_counter() - start
    x0, y0, x1, y1 = result.record["roi"]
    editable = rendered.mask
    if editable is None:  # without a mask the editor may change only its box
        editable = np.zeros(rendered.region.shape, bool)
        editable[y0:y1, x0:x1] = True
    scores = pg.photo_metrics(rendered, np.asarray(result.image), editable)
    case = rendered.case
    return {
        "index": index,
        "shape": case.shape,
        "distance": case.distance,
        "mask": case.with_mask,
        "drag_px": round(float(np.hypot(*case.move)), 1),
        "roi": [x0, y0, x1, y1],
        **scores,
        "seconds": seconds,
    }


def means(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.fmean(r[k] for r in rows) for k in KEYS} if rows else {}


def table(rows: list[dict[str, Any]], groups: dict[str, dict[str, float]]) -> str:
    head = (
        "| case | drag px | mask | roi (w x h) | handle err px | PSNR in | PSNR in, away | keep exact | s |"
    )
    lines = [head, "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        w, h = r["roi"][2] - r["roi"][0], r["roi"][3] - r["roi"][1]
        mask = "yes" if r["mask"] else "no"
        lines.append(
            f"| {r['index']:02d} {r['shape']} {r['distance']} | {r['drag_px']:.0f} | {mask}"
            f" | {w}x{h} | {r['handle_error']:.2f} | {r['psnr_in']:.2f} | {r['psnr_in_away']:.2f}"
            f" | {r['keep_exact_out']:.4f} | {r['seconds']:.2f} |"
        )
    for name, m in groups.items():
        if m:
            lines.append(
                f"| **mean, {name}** | | | | {m['handle_error']:.2f} | {m['psnr_in']:.2f} | "
                f"{m['psnr_in_away']:.2f} | {m['keep_exact_out']:.4f} | {m['seconds']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=18, help="cases (18 = every shape x distance x mask once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="2048x1536", help="W x H of the cases")
    p.add_argument("--preset", default="warp")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    assert len(size) == 2
    config = preset(args.preset).with_overrides(args.overrides)
    editor = DragEditor(device=args.device)
    rows = []
    for i in range(args.count):
        rows.append(run_case(editor, args.seed, i, (size[0], size[1]), config))
        print(f"case {i}: {json.dumps({k: rows[-1][k] for k in KEYS})}", file=sys.stderr)
    groups = {
        "masked": means([r for r in rows if r["mask"]]),
        "no mask": means([r for r in rows if not r["mask"]]),
        "all": means(rows),
    }
    print(table(rows, groups))
    if args.json:
        out = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "away_px": pg.away_px(size),
            "means": groups,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**out, "cases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
