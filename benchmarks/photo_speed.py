"""A 12-MP photo edit against the same edit on its crop alone (issue #20): time ratio and peak memory.

    python benchmarks/photo_speed.py [--size 4000x3000] [--repeats 5] [--json OUT.json] [--keep DIR]

Builds a textured 12-MP scene (``dragdiff.bench.photo_gt``, a masked case), writes it as a 4:2:0 JPEG, and
times what ``dragdiff edit`` does after the model is loaded: decode the file, ``DragEditor.edit`` (warp, auto
ROI), encode the output JPEG with the input's tables. Then the same for the crop alone: the ROI the big edit
chose, written as a JPEG with the same tables, its drag and mask shifted, edited whole (``roi="full"``).
One process loads the model, warms up on each variant, then runs them ``--repeats`` times interleaved
(medians: both see the same machine load, which the shared 2-core CPU needs; the CPU seconds of the process
are reported too, which another job's load changes little). RSS: the process's peak
(``resource.getrusage``, torch and the model included) and, per edit, the peak during it (VmHWM reset
through /proc/self/clear_refs) and its growth over the RSS before it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CASE_INDEX = 12  # a masked, mid-distance ellipse of photo_gt's cycle
QUALITY = 90


def build(folder: Path, size: tuple[int, int]) -> dict[str, Any]:
    """The 12-MP scene as JPEG + mask PNG and its drag; returns the case's facts."""
    from dragdiff.bench import photo_gt as pg

    rendered = pg.render_case(pg.make_case(0, CASE_INDEX, size))
    assert rendered.mask is not None
    Image.fromarray(rendered.source).save(folder / "photo.jpg", quality=QUALITY, subsampling=2)
    Image.fromarray(rendered.mask.astype(np.uint8) * 255).save(folder / "photo-mask.png")
    return {"handle": list(rendered.case.handle), "target": list(rendered.case.target), "size": list(size)}


def edit_file(
    editor: Any, image_path: Path, mask_path: Path, drag: list[list[int]], out: Path, roi: str
) -> dict:
    """What ``dragdiff edit`` does once the model is loaded; seconds per phase."""
    from dragdiff import io
    from dragdiff.config import preset
    from dragdiff.types import DragInstruction

    c0, t0 = time.process_time(), time.perf_counter()
    image, facts = io.load_image_file(image_path)
    mask = io.load_mask(mask_path, image.size)
    t1 = time.perf_counter()
    ins = DragInstruction.from_pairs([(tuple(drag[0]), tuple(drag[1]))], mask=mask)
    result = editor.edit(image, ins, preset("warp"), roi=roi)
    t2 = time.perf_counter()
    io.atomic_save_image(result.image, out, like=facts)
    t3 = time.perf_counter()
    cpu = time.process_time() - c0  # CPU seconds of every thread: what the work costs, whatever the load
    return {
        "read": t1 - t0,
        "edit": t2 - t1,
        "write": t3 - t2,
        "total": t3 - t0,
        "cpu": cpu,
        "roi": result.record["roi"],
    }


def _vm(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next reading is the peak since now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measured(editor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """One edit with its phases, and the process's RSS before it and at its peak (MiB)."""
    folder = Path(spec["folder"])
    before = _vm("VmRSS")
    reset = _reset_peak()
    run = edit_file(
        editor, folder / spec["image"], folder / spec["mask"], spec["drag"], folder / spec["out"], spec["roi"]
    )
    peak = _vm("VmHWM") if reset else float("nan")
    return {**run, "rss_before_mib": before, "rss_peak_mib": peak, "rss_growth_mib": peak - before}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("read", "edit", "write", "total", "cpu", "rss_before_mib", "rss_peak_mib", "rss_growth_mib")
    return {
        "median": {k: statistics.median(r[k] for r in runs) for k in keys},
        "runs": runs,
        "roi": runs[-1]["roi"],
    }


def make_crop(folder: Path, box: list[int], drag: list[list[int]]) -> list[list[int]]:
    """The ROI of the big photo as its own JPEG (the input's tables) and mask; returns the shifted drag."""
    x0, y0, x1, y1 = box
    with Image.open(folder / "photo.jpg") as im:
        im.crop(box).save(folder / "crop.jpg", qtables=im.quantization, subsampling=2)
    with Image.open(folder / "photo-mask.png") as m:
        m.crop(box).save(folder / "crop-mask.png")
    return [[drag[0][0] - x0, drag[0][1] - y0], [drag[1][0] - x0, drag[1][1] - y0]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="4000x3000")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="folder to keep the inputs and outputs in")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="photo-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    case = build(folder, (w, h))
    drag = [case["handle"], case["target"]]
    base = {"folder": str(folder), "drag": drag}
    from dragdiff.editor import DragEditor

    editor = DragEditor(device="cpu")
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports + model (KiB -> MiB)
    photo = {**base, "image": "photo.jpg", "mask": "photo-mask.png", "out": "out.jpg", "roi": "auto"}
    first = measured(editor, photo)  # also the warm-up: OpenCV's and torch's first calls
    crop_drag = make_crop(folder, first["roi"], drag)
    crop_spec = {
        **base,
        "drag": crop_drag,
        "image": "crop.jpg",
        "mask": "crop-mask.png",
        "out": "crop-out.jpg",
    }
    crop_spec["roi"] = "full"
    measured(editor, crop_spec)
    photo_runs, crop_runs = [], []
    for i in range(args.repeats):  # interleaved, in alternating order: both see the same machine load
        for spec, runs in ((photo, photo_runs), (crop_spec, crop_runs))[:: 1 if i % 2 == 0 else -1]:
            runs.append(measured(editor, spec))
    full, crop = summary(photo_runs), summary(crop_runs)
    # the process's peak: the larger of the load's and every edit's (resetting VmHWM resets ru_maxrss too)
    peak = max(loaded, *(r["rss_peak_mib"] for r in (first, *photo_runs, *crop_runs)))
    ratio = full["median"]["total"] / crop["median"]["total"]
    bw, bh = full["roi"][2] - full["roi"][0], full["roi"][3] - full["roi"][1]
    lines = [
        f"| warp edit, CPU, median of {args.repeats} | read s | edit s | write s | total s"
        " | CPU s | RSS during the edit MiB (peak, growth) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (
        (f"{w}x{h} photo ({w * h / 1e6:.1f} MP), auto ROI", full),
        (f"its {bw}x{bh} crop alone", crop),
    ):
        m = r["median"]
        cells = [f"{m[k]:.3f}" for k in ("read", "edit", "write", "total", "cpu")]
        cells.append(f"{m['rss_peak_mib']:.0f} (+{m['rss_growth_mib']:.0f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cpu_ratio = full["median"]["cpu"] / crop["median"]["cpu"]
    lines.append(
        f"\nratio photo / crop: **{ratio:.2f}x** wall, {cpu_ratio:.2f}x CPU (issue #20 asks <= 1.3x)"
    )
    lines.append(f"peak RSS of the whole process: {peak:.0f} MiB (after loading the model: {loaded:.0f} MiB)")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "size": [w, h],
            "repeats": args.repeats,
            "photo": full,
            "crop": crop,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
        }
        record |= {"peak_rss_mib": peak, "loaded_rss_mib": loaded}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
