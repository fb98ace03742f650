"""Faithful path vs fast path, phase by phase, in one process (issue #6).

Builds the random-weight SD-1.5-architecture pipeline of ``edit_sd15.py`` (compute does not depend on weight
values) and times, with the stop rule off so every run does all its iterations:

    first     the first edit of the process, fast path (kernel selection, allocator growth included)
    faithful  preset ``faithful`` (reference structure: full UNet forward, peft LoRA branch), warm
    fast      preset ``dragdiffusion`` = the same hyper-parameters on the fast path, warm, same seed
    repeat    a second drag on the same image (another target): LoRA and inverted latent cached
    no-mask   the repeat without a mask: the optimisation runs the truncated UNet forward
    fast-recipe  preset ``fast`` (LoRA batch 1, autocast "auto"), its own LoRA

Each row: per-phase seconds, ms per optimisation iteration, total, peak GPU memory (reset per run). The
faithful and fast rows are also compared: tracked handles per iteration (supervision-grid px) and the final
images (LPIPS when its weights are installed, PSNR always).

    python benchmarks/speed.py --out speed.json                        # GPU (fp16 weights)
    python benchmarks/speed.py --tiny --device cpu --out s.json         # smoke test
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_sd15 import build_pipeline, sync, test_picture  # noqa: E402

from dragdiff.config import EditConfig, parse_override, preset  # noqa: E402
from dragdiff.editor import DragEditor  # noqa: E402
from dragdiff.io import atomic_write_json, package_versions  # noqa: E402
from dragdiff.types import DragInstruction  # noqa: E402

log = logging.getLogger("speed")

SEED, FIRST_SEED, RECIPE_SEED = 3, 1, 5  # LoRA/latent caches are keyed by seed: each seed trains anew


def timed(editor: DragEditor, image: Image.Image, ins: DragInstruction, config: EditConfig) -> dict[str, Any]:
    """One edit: phase seconds, ms/iteration, peak memory, and the tracked handles per iteration (grid px)."""
    device = editor.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    stamps: list[float] = []
    tracked: list[list[tuple[float, float]]] = []
    start = time.perf_counter()
    run = editor.iter_edit(image, ins, config)
    for event in run:
        if event.phase == "drag":
            stamps.append(time.perf_counter())
            tracked.append([p.as_tuple() for p in event.handles])
    wall = time.perf_counter() - start
    result = run.result
    assert result is not None
    t = result.timings
    per_iter = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    grid_w, grid_h = result.record["grid_size"]
    scale = np.array([grid_w / image.width, grid_h / image.height])
    return {
        "lora_s": t["lora"],
        "inversion_s": t["inversion"],
        "optimisation_s": t["drag"],
        "iterations": result.iterations,
        "ms_per_iteration_median": 1000 * statistics.median(per_iter) if per_iter else None,
        "denoise_decode_s": t["denoise"] + t["decode"],
        "edit_total_s": t["total"],
        "wall_s": wall,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "tracked_grid": (np.array(tracked) * scale).tolist(),  # (iterations, N, 2) grid px (x, y)
        "_image": result.image,
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Fast vs faithful: max tracked-handle difference (grid px, over all iterations) and image distances."""
    ta, tb = np.array(a["tracked_grid"]), np.array(b["tracked_grid"])
    out: dict[str, Any] = {
        "max_handle_diff_grid_px": float(np.abs(ta - tb).max()) if ta.shape == tb.shape and ta.size else None,
        "final_handle_diff_grid_px": float(np.abs(ta[-1] - tb[-1]).max()) if ta.size and tb.size else None,
    }
    x = np.asarray(a["_image"], dtype=np.float32) / 255
    y = np.asarray(b["_image"], dtype=np.float32) / 255
    mse = float(((x - y) ** 2).mean())
    out["psnr_db"] = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    try:
        from dragdiff.bench.lpips import LPIPS
        from dragdiff.bench.metrics import lpips_distance

        def tensor(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(arr).permute(2, 0, 1)[None]

        out["lpips"] = lpips_distance(LPIPS(), tensor(x), tensor(y))
    except (FileNotFoundError, ImportError, ValueError) as exc:
        out["lpips"] = None
        out["lpips_missing"] = str(exc)
    return out


ORDER = [
    ("LoRA", "lora_s", "{:.2f}"),
    ("inversion", "inversion_s", "{:.2f}"),
    ("optimisation", "optimisation_s", "{:.2f}"),
    ("ms/it", "ms_per_iteration_median", "{:.1f}"),
    ("denoise+decode", "denoise_decode_s", "{:.2f}"),
    ("edit total", "edit_total_s", "{:.2f}"),
    ("peak GiB", "peak_gpu_mem_gib", "{:.2f}"),
]


def table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per run, one column per phase (seconds unless named)."""
    lines = ["| run | " + " | ".join(label for label, _, _ in ORDER) + " |"]
    lines.append("|---" * (len(ORDER) + 1) + "|")
    for name, row in rows.items():
        cells = [("-" if row.get(k) is None else fmt.format(row[k])) for _, k, fmt in ORDER]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def configs(overrides: list[str]) -> dict[str, EditConfig]:
    def build(name: str, seed: int) -> EditConfig:
        cfg = preset(name).override(**{"drag.stop_distance": 0.0, "seed": seed})  # every iteration runs
        for text in overrides:
            key, value = parse_override(text, cfg)
            cfg = cfg.override(**{key: value})
        return cfg

    return {
        "first": build("dragdiffusion", FIRST_SEED),
        "faithful": build("faithful", SEED),
        "fast": build("dragdiffusion", SEED),
        "fast-recipe": build("fast", RECIPE_SEED),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model of the same topology (64 px)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="weights dtype")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow to start)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true", help="keep cuDNN autotuning off")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype = dtypes[args.dtype] if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not args.no_cudnn_benchmark  # both paths
    cfgs = configs(args.overrides)
    size = 64 if args.tiny else 512
    image, ins = test_picture(size)
    s = size / 512
    other_pairs = [((180 * s, 256 * s), (180 * s, 340 * s))]  # the same disc, dragged down instead
    other = DragInstruction.from_pairs(other_pairs, mask=ins.mask, prompt=ins.prompt)
    unmasked = DragInstruction.from_pairs(other_pairs, mask=None, prompt=ins.prompt)

    start = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, dtype)
    if args.compile:
        pipe.unet.compile()  # in place: hooks and attention processors still apply
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as cache:
        editor = DragEditor(pipe, lora_cache_dir=cache)
        sync(device)
        load_s = time.perf_counter() - start
        log.info("first edit in the process (fast path) ...")
        rows["first (fast, cold process)"] = timed(editor, image, ins, cfgs["first"])
        log.info("faithful warm-up + edit ...")
        short = {"lora.steps": 2, "drag.max_iterations": 2, "inversion.num_steps": 4, "seed": 2}
        editor.edit(image, ins, cfgs["faithful"].override(**short))
        rows["faithful (warm)"] = timed(editor, image, ins, cfgs["faithful"])
        log.info("fast edit ...")
        rows["fast (warm)"] = timed(editor, image, ins, cfgs["fast"])
        log.info("repeat drags ...")
        rows["fast repeat drag (LoRA + z_t cached)"] = timed(editor, image, other, cfgs["fast"])
        rows["fast repeat drag, no mask (truncated UNet)"] = timed(editor, image, unmasked, cfgs["fast"])
        log.info("fast recipe ...")
        rows["preset fast (LoRA batch 1, auto precision)"] = timed(editor, image, ins, cfgs["fast-recipe"])
    equivalence = compare(rows["faithful (warm)"], rows["fast (warm)"])
    for row in rows.values():
        row.pop("_image")
    report = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device": str(device),
        "weights_dtype": str(dtype).removeprefix("torch."),
        "image_size": size,
        "tiny": args.tiny,
        "compile": args.compile,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "load_s": load_s,
        "runs": rows,
        "fast_vs_faithful": equivalence,
        "configs": {k: v.to_dict() for k, v in cfgs.items()},
        "versions": package_versions(),
    }
    text = table(rows)
    report["table_md"] = text
    print(
        f"\n{report['device_name']} | {size}x{size} | weights {report['weights_dtype']} | load {load_s:.1f} s"
    )
    print(text)
    print("fast vs faithful:", {k: v for k, v in equivalence.items() if k != "lpips_missing"})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
