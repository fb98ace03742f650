"""Faithful path vs fast path, phase by phase, in one process (issue #6).

Builds the random-weight SD-1.5-architecture pipeline of ``edit_sd15.py`` (compute does not depend on weight
values) and times, with the stop rule off so every run does all its iterations:

    first     the first edit of the process, default preset (kernel selection, allocator growth, graph
              captures included)
    faithful  preset ``faithful`` (reference structure: full UNet forward, peft LoRA branch), warm
    fast      preset ``dragdiffusion`` = the same hyper-parameters on the fast path, warm, same seed, with
              ``runtime.cuda_graphs=false`` (every kernel launched by the host)
    graphs    preset ``dragdiffusion`` as it is (the default: fast path + CUDA graphs), warm, same seed,
              with empty LoRA and inversion caches so it trains and inverts itself
    repeat    a second drag on the same image (another target): LoRA and inverted latent cached
    no-mask   the repeat without a mask: the optimisation runs the truncated UNet forward
    fast-recipe  preset ``fast`` (LoRA 30 steps at lr 1.5e-3, autocast "auto"), its own LoRA

Each row: per-phase seconds, ms per optimisation iteration, total, peak GPU memory (reset per run). The
faithful and fast rows, and the fast and graphs rows, are also compared: tracked handles per iteration
(supervision-grid px) and the final images (LPIPS when its weights are installed, PSNR always).

    python benchmarks/speed.py --out speed.json                        # GPU (fp16 weights)
    python benchmarks/speed.py --tiny --device cpu --out s.json         # smoke test
    python benchmarks/speed.py --only fast,repeat --out s.json          # some rows (names as above)

``--out`` is rewritten atomically after every row with the rows done so far and ``"complete": false``, so a
run cut by a timeout still leaves its numbers; the last write has ``"complete": true``. ``repeat`` and
``no-mask`` need ``fast`` first (it fills the LoRA and inversion caches), so ``--only`` adds it; without
``first``, one short untimed edit warms the process up. ``--deterministic`` runs everything under
``dragdiff.bench.runner.deterministic_mode()`` (cuDNN autotuning off, SDPA on its MATH backend, ...).
"""

from __future__ import annotations

import argparse
import contextlib
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

from dragdiff.bench.runner import deterministic_mode  # noqa: E402
from dragdiff.config import EditConfig, parse_override, preset  # noqa: E402
from dragdiff.diffusion.lora import LoraCache  # noqa: E402
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
        "fast": build("dragdiffusion", SEED).override(**{"runtime.cuda_graphs": False}),
        "graphs": build("dragdiffusion", SEED),
        "fast-recipe": build("fast", RECIPE_SEED),
    }


ROWS = {  # --only name: (row label, config, which instruction)
    "first": ("first (fast, cold process)", "first", "ins"),
    "faithful": ("faithful (warm)", "faithful", "ins"),
    "fast": ("fast, no graphs (warm)", "fast", "ins"),
    "graphs": ("fast + CUDA graphs = default (warm)", "graphs", "ins"),
    "repeat": ("default: repeat drag (LoRA + z_t cached)", "graphs", "other"),
    "no-mask": ("default: repeat drag, no mask (truncated UNet)", "graphs", "unmasked"),
    "fast-recipe": ("preset fast (LoRA 30 steps, auto precision)", "fast-recipe", "ins"),
}
# a repeat drag is timed after the edit that fills the caches
NEEDS = {"repeat": "graphs", "no-mask": "graphs"}


def selected(only: str | None) -> list[str]:
    """The row names to run, in the table's order: all of them, or ``--only`` plus what those need."""
    if not only:
        return list(ROWS)
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = sorted(names - set(ROWS))
    if unknown or not names:
        raise SystemExit(f"--only: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    names |= {NEEDS[n] for n in names if n in NEEDS}
    return [n for n in ROWS if n in names]


def write(path: str | None, report: dict[str, Any], rows: dict[str, dict[str, Any]], complete: bool) -> None:
    """Write the report with the rows done so far (atomically: a cut run leaves the last whole file)."""
    if path is None:
        return
    done = {name: {k: v for k, v in row.items() if k != "_image"} for name, row in rows.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**report, "runs": done, "table_md": table(done), "complete": complete})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model of the same topology (64 px)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="weights dtype")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--compile", action="store_true", help="= --set runtime.compile=true")
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="turn cuDNN autotuning on (off by default, as in dragdiff: with CUDA graphs it gains nothing)",
    )
    parser.add_argument("--only", default=None, metavar="NAME[,NAME]", help=f"rows: {', '.join(ROWS)}")
    parser.add_argument("--deterministic", action="store_true", help="PyTorch's deterministic settings")
    parser.add_argument(
        "--sdpa",
        default=None,
        metavar="BACKEND[,BACKEND]",
        help="SDPA backends in priority order, e.g. CUDNN_ATTENTION,FLASH_ATTENTION (SDPBackend names)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here (after every row)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = selected(args.only)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype = dtypes[args.dtype] if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    torch.backends.cudnn.benchmark = device.type == "cuda" and args.cudnn_benchmark  # both paths
    attention: Any = contextlib.nullcontext()
    if args.sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [getattr(SDPBackend, name.strip()) for name in args.sdpa.split(",")]
        attention = sdpa_kernel(backends, set_priority=True)
    with deterministic_mode(args.deterministic) as determinism, attention:  # determinism: no autotuning
        rows, report = run_rows(args, names, device, dtype, determinism)
    report["sdpa"] = args.sdpa
    for key, a, b in [
        ("fast_vs_faithful", ROWS["faithful"][0], ROWS["fast"][0]),
        ("graphs_vs_fast", ROWS["fast"][0], ROWS["graphs"][0]),
    ]:
        if a in rows and b in rows:
            report[key] = compare(rows[a], rows[b])
    write(args.out, report, rows, complete=True)
    print(f"\n{report['device_name']} | {report['image_size']}px | weights {report['weights_dtype']} "
          f"| load {report['load_s']:.1f} s")  # fmt: skip
    print(table(rows))
    for key in ("fast_vs_faithful", "graphs_vs_fast"):
        if key in report:
            print(f"{key}:", {k: v for k, v in report[key].items() if k != "lpips_missing"})
    if args.out:
        print(f"wrote {args.out}")
    return 0


def run_rows(
    args: argparse.Namespace,
    names: list[str],
    device: torch.device,
    dtype: torch.dtype,
    determinism: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Build the pipeline, time the selected rows in order, rewrite ``--out`` after each."""
    cfgs = configs(args.overrides + (["runtime.compile=true"] if args.compile else []))
    size = 64 if args.tiny else 512
    image, ins = test_picture(size)
    s = size / 512
    other_pairs = [((180 * s, 256 * s), (180 * s, 340 * s))]  # the same disc, dragged down instead
    instructions = {
        "ins": ins,
        "other": DragInstruction.from_pairs(other_pairs, mask=ins.mask, prompt=ins.prompt),
        "unmasked": DragInstruction.from_pairs(other_pairs, mask=None, prompt=ins.prompt),
    }
    start = time.perf_counter()
    pipe = build_pipeline(args.tiny, device, dtype)
    report: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device": str(device),
        "weights_dtype": str(dtype).removeprefix("torch."),
        "image_size": size,
        "tiny": args.tiny,
        "compile": args.compile,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": determinism,
        "rows_selected": names,
        "configs": {k: v.to_dict() for k, v in cfgs.items()},
        "versions": package_versions(),
    }
    rows: dict[str, dict[str, Any]] = {}
    short = {"lora.steps": 2, "drag.max_iterations": 2, "inversion.num_steps": 4, "seed": 2}
    with tempfile.TemporaryDirectory() as cache:
        editor = DragEditor(pipe, lora_cache_dir=cache)
        sync(device)
        report["load_s"] = time.perf_counter() - start
        if names[0] != "first":  # no cold-process row: warm the process up first, untimed
            editor.edit(image, ins, cfgs["fast"].override(**short))
        for name in names:
            label, cfg, which = ROWS[name]
            if name == "faithful":  # the faithful structure's own kernels and peft path, untimed
                editor.edit(image, ins, cfgs["faithful"].override(**short))
            if name == "graphs":  # the same seed as "fast": it must train and invert again, not reuse
                editor.lora_cache = LoraCache(Path(cache) / "graphs")
                editor._inverted.clear()
            log.info("%s ...", label)
            rows[label] = timed(editor, image, instructions[which], cfgs[cfg])
            write(args.out, report, rows, complete=False)
    return rows, report


if __name__ == "__main__":
    sys.exit(main())
