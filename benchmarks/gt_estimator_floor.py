"""How well does the ground-truth suite's handle-error estimator read a perfect edit, and no edit, per kind?

    python benchmarks/gt_estimator_floor.py [--count 48] [--seeds 0 1] [--size 128]

Makes the suite for each seed in a temporary folder and scores, with ``gt_metrics``, the exact target itself
(the floor: what a perfect edit scores) and the unedited source (should score the drag length). Prints the
median and mean of ``handle_error`` per kind and overall. No model is loaded; seconds on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict

from dragdiff.bench.dragbench import read_dragbench
from dragdiff.bench.gtsuite import GT_SIZE, gt_metrics, write_gt_suite
from dragdiff.bench.lpips import LPIPS


def _row(name: str, exact: list[float], none: list[float]) -> str:
    return (
        f"| {name} | {len(exact)} | {statistics.median(exact):.2f} | {statistics.mean(exact):.2f} | "
        f"{max(exact):.1f} | {statistics.mean(none):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=GT_SIZE)
    args = parser.parse_args()
    lpips = LPIPS()
    for seed in args.seeds:
        exact: dict[str, list[float]] = defaultdict(list)
        none: dict[str, list[float]] = defaultdict(list)
        with tempfile.TemporaryDirectory() as tmp:
            write_gt_suite(tmp, count=args.count, seed=seed, size=args.size)
            for s in read_dragbench(tmp):
                exact[s.ref.category].append(gt_metrics(s, s.target, lpips)["handle_error"])
                none[s.ref.category].append(gt_metrics(s, s.image, lpips)["handle_error"])
        print(f"\nseed {seed}, {args.count} cases: handle_error (px) of the exact target and of no edit")
        print("| kind | cases | exact: median | exact: mean | exact: max | no edit: mean |")
        print("|---|---:|---:|---:|---:|---:|")
        for kind in sorted(exact):
            print(_row(kind, exact[kind], none[kind]))
        print(_row("all", [v for vs in exact.values() for v in vs], [v for vs in none.values() for v in vs]))


if __name__ == "__main__":
    main()
