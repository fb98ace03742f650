"""How strong an edge the watershed line between two handles of one GrabCut part follows, on the ground-truth
suites: one object (the line crosses its inside) against two touching objects (the line is their border).

    dragdiff bench make-gt /tmp/gt48-s0 --count 48 --seed 0     # and the other seeds
    python benchmarks/split_line_stats.py /tmp/gt48-s0 /tmp/gt48-s1 /tmp/gt48-s5 /tmp/gt48-s11 /tmp/gt48-s23

For every pair of handles that GrabCut put in one part (``support._split_objects``' input) it prints whether
they sit on the same object (the suite's ``gt.json``), the line's mean gradient and its lower quartile
(``support._line_strength``), both over the part's outline's mean gradient, and the line's length. A pair
whose regions never meet has no line (``-``). The split threshold is ``support.SPLIT_EDGE``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dragdiff.geometry import support as S

ROWS: list[tuple[str, bool, float | None, float | None, int]] = []
CURRENT: dict[str, object] = {}


def _pairs(image: np.ndarray, labels: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """``_split_objects`` with its pairs recorded first (its watershed, ``_handle_watershed``)."""
    grad = S._gradient(image)
    objects = CURRENT["objects"]
    assert isinstance(objects, list)
    for k in range(1, int(labels.max()) + 1):
        part = labels == k
        idx = [i for i, g in enumerate(S.handle_labels(labels, handles)) if g == k]
        if len(idx) < 2:
            continue
        markers, edge = S._handle_watershed(image, grad, part, handles[idx])
        if not edge > 1.0:  # a part that fills the picture has no outline to compare with
            continue
        ridge = (markers == -1) & part
        near = [cv2.dilate((markers == n + 1).astype(np.uint8), S.disc(1)) > 0 for n in range(len(idx))]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                line = ridge & near[a] & near[b]
                same = objects[idx[a]] == objects[idx[b]]
                if line.any():
                    mean = float(grad[line].mean()) / edge
                    ROWS.append(
                        (
                            str(CURRENT["name"]),
                            same,
                            mean,
                            S._line_strength(grad, line) / edge,
                            int(line.sum()),
                        )
                    )
                else:
                    ROWS.append((str(CURRENT["name"]), same, None, None, 0))
    return ORIGINAL(image, labels, handles)


ORIGINAL = S._split_objects


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(suites: list[str]) -> int:
    S._split_objects = _pairs
    for suite in suites:
        for gt in sorted(Path(suite).glob("*/*/gt.json")):
            case = json.loads(gt.read_text())
            image = np.asarray(Image.open(gt.parent / "original_image.png").convert("RGB"))
            mask = None
            if case.get("with_mask"):
                mask = np.asarray(Image.open(gt.parent / "edit_region.png").convert("L")) > 127
            CURRENT.update(
                name=f"{Path(suite).name}/{gt.parent.parent.name}/{gt.parent.name}", objects=case["objects"]
            )
            S.segment_support(image, np.array(case["handles"], float), mask)
    print("| case | handles on | mean / outline | lower quartile / outline | line px |")
    print("|---|---|---:|---:|---:|")
    for name, same, mean, q25, n in sorted(ROWS, key=lambda r: (r[3] is None, r[3] or 0.0)):
        print(f"| {name} | {'one object' if same else 'two objects'} | {_fmt(mean)} | {_fmt(q25)} | {n} |")
    for same in (True, False):
        vals = [r for r in ROWS if r[1] is same and r[3] is not None]
        if vals:
            print(f"{'one object' if same else 'two objects'}: {len(vals)} lines; mean/outline "
                  f"{min(r[2] for r in vals):.2f}-{max(r[2] for r in vals):.2f}, lower quartile/outline "
                  f"{min(r[3] for r in vals):.2f}-{max(r[3] for r in vals):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
