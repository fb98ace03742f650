"""Time the ``warp`` method (issue #16): a whole edit at 512² on the random-weight SD-1.5-architecture
pipeline of ``edit_sd15.py``, and the model-free warp preview at 512² on the CPU.

    python benchmarks/warp_speed.py [--tiny] [--repeats 5] [--json OUT.json]

Prints a table (seconds per edit: first, warm median, phases; preview ms) and writes JSON. On a GPU the edit
runs in fp16 weights (precision "auto"); the preview always runs on the CPU (it has no model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from edit_sd15 import build_pipeline, sync, test_picture  # noqa: E402

from dragdiff.config import preset  # noqa: E402
from dragdiff.editor import DragEditor  # noqa: E402
from dragdiff.geometry.warp import warp_preview  # noqa: E402


def time_edits(editor: DragEditor, size: int, repeats: int, fill: str) -> dict[str, Any]:
    image, ins = test_picture(size)
    config = preset("warp").override(**{"runtime.precision": "auto", "warp.fill": fill})
    seconds, phases = [], []
    for _ in range(repeats + 1):  # the first one warms up (kernels, CUDA graphs)
        sync(editor.device)
        start = time.perf_counter()
        result = editor.edit(image, ins, config)
        sync(editor.device)
        seconds.append(time.perf_counter() - start)
        phases.append(result.timings)
    peak = torch.cuda.max_memory_allocated(editor.device) / 2**30 if editor.device.type == "cuda" else None
    return {
        "first_s": seconds[0],
        "warm_median_s": statistics.median(seconds[1:]),
        "warm_s": seconds[1:],
        "phases_last": phases[-1],
        "peak_gib": peak,
    }


PREVIEW_MAX = 256  # as the web editor computes it (ui.app.PREVIEW_MAX)


def time_preview(size: int, repeats: int) -> dict[str, Any]:
    image, ins = test_picture(size)
    warp_preview(image, ins, max_side=PREVIEW_MAX)  # warm-up (OpenCV's first calls)
    ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        warp_preview(image, ins, max_side=PREVIEW_MAX)
        ms.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(ms), "ms": ms, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model of the same topology (64 px)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="OUT.json")
    parser.add_argument("--no-edit", action="store_true", help="only the CPU preview")
    parser.add_argument(
        "--fill",
        default="model",
        choices=("model", "auto", "classical"),
        help="warp.fill of the timed edit (default: model, so that the model's fill is always in the time)",
    )
    args = parser.parse_args(argv)
    size = 64 if args.tiny else 512
    report: dict[str, Any] = {"size": size, "preview_cpu": time_preview(size, args.repeats)}
    if not args.no_edit:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        pipe = build_pipeline(args.tiny, device, dtype)
        report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        report["fill"] = args.fill
        report["edit"] = time_edits(DragEditor(pipe), size, args.repeats, args.fill)
    print(f"| what ({size}²) | value |\n|---|---:|")
    print(f"| warp preview, CPU, median | {report['preview_cpu']['median_ms']:.1f} ms |")
    if "edit" in report:
        e = report["edit"]
        print(f"| warp edit on {report['device']} (warp.fill={args.fill}), first | {e['first_s']:.3f} s |")
        print(f"| warp edit on {report['device']}, warm median | {e['warm_median_s']:.3f} s |")
        print("| phases (last) | " + ", ".join(f"{k} {v:.3f}" for k, v in e["phases_last"].items()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
