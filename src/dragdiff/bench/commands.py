"""``dragdiff bench``: make the ground-truth suite, run a benchmark, summarise a results folder.

    dragdiff bench make-gt OUT_DIR [--count N --seed S --kinds K1,K2,...]
    dragdiff bench run BENCH_DIR -o RESULTS [--preset P | --methods P1,P2,…] [--set …] [--model …]
                       [--dift-model …] [--limit N] [--deterministic]
    dragdiff bench summarize RESULTS

``bench run`` may be launched by ``torchrun --nproc_per_node K -m dragdiff.cli bench run …`` to split the
samples over K processes (one GPU each on CUDA).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dragdiff.config import DEFAULT_PRESET, PRESETS, ConfigError


def register(subparsers: Any) -> None:
    """Add ``bench`` and its subcommands (called by ``dragdiff.cli``)."""
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: DragBench and the ground-truth suite",
        description="Make the ground-truth drag suite, run DragEditor over a benchmark, summarise results.",
    )
    sub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)

    gt = sub.add_parser("make-gt", help="write the ground-truth suite (DragBench layout + exact targets)")
    gt.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to write (created; existing samples overwritten)"
    )
    gt.add_argument(
        "--count", type=int, default=48,
        help="number of cases (default: %(default)s = every kind x 3 distances x with/without mask)",
    )  # fmt: skip
    gt.add_argument("--seed", type=int, default=0, help="suite seed (default: %(default)s)")
    gt.add_argument(
        "--kinds", default=None, metavar="K1,K2,...",
        help="edit kinds to cycle through (default: all eight, see docs/benchmark.md); "
        "move,move_multi,stretch,resize rebuilds a suite made before the other four existed",
    )  # fmt: skip
    gt.add_argument(
        "--size", type=int, default=None, help="image side in px (default: 128, the embedded model's)"
    )
    gt.add_argument("--preview", default=None, metavar="IMAGE", help="also save a contact sheet of the cases")
    gt.set_defaults(func=run_make_gt)

    run = sub.add_parser(
        "run",
        help="edit and score every sample of a benchmark folder (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  dragdiff bench run gt/ -o results/ --set drag.max_iterations=40 --limit 8\n"
        "  dragdiff bench run gt/ -o compare/ --methods warp,dragdiffusion   # compare/<preset>/, one table",
    )
    run.add_argument(
        "bench_dir", metavar="BENCH_DIR", help="DragBench-layout folder (DragBench or make-gt output)"
    )
    run.add_argument(
        "-o", "--output", required=True, metavar="RESULTS", help="results folder (resumed if present)"
    )
    run.add_argument("--preset", default=None, choices=sorted(PRESETS), help=f"default: {DEFAULT_PRESET}")
    run.add_argument(
        "--methods", default=None, metavar="P1,P2,...",
        help="several presets on the same samples in one run, side by side: RESULTS/<preset>/ each, one "
        f"comparison table in RESULTS/summary.* (presets: {', '.join(sorted(PRESETS))})",
    )  # fmt: skip
    run.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
        help="override a config value, e.g. --set lora.steps=40 (see `dragdiff edit --help`)",
    )  # fmt: skip
    run.add_argument(
        "--model", default=None,
        help="model to edit with: SD-1.x, SD-2.x or SDXL folder, single file or hub id (default: embedded)",
    )  # fmt: skip
    run.add_argument(
        "--dift-model", default=None, metavar="PATH",
        help="SD pipeline for DIFT features (the paper: SD-2.1); enables Mean Distance (MD)",
    )  # fmt: skip
    run.add_argument("--model-config", default=None, metavar="DIR", help="configs for a single-file --model")
    run.add_argument(
        "--vae", default=None, help="a separate VAE for --model (diffusers folder or single file)"
    )
    run.add_argument(
        "--dift-model-config", default=None, metavar="DIR", help="configs for a single-file --dift-model"
    )
    run.add_argument("--limit", type=int, default=None, help="only the first N samples (sorted)")
    run.add_argument("--device", default=None, help="cuda, cpu … (default: CUDA if present; per rank)")
    run.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="model weights dtype")
    run.add_argument(
        "--lora-cache", default=None, metavar="DIR", help="LoRA cache (default: RESULTS/lora-cache)"
    )
    run.add_argument(
        "--deterministic", action="store_true",
        help="PyTorch's deterministic settings (cuBLAS workspace, deterministic algorithms with warnings, "
        "cuDNN deterministic and not autotuned, SDPA on its MATH backend); slower; recorded in run.json",
    )  # fmt: skip
    run.set_defaults(func=run_bench)

    summ = sub.add_parser(
        "summarize",
        help="rebuild summary.{md,csv,json} and contact sheets of a results folder (or of each method and "
        "the side-by-side table of a --methods folder)",
    )
    summ.add_argument("results", metavar="RESULTS")
    summ.set_defaults(func=run_summarize)


def run_make_gt(args: argparse.Namespace) -> int:
    from dragdiff.bench.gtsuite import EDIT_KINDS, GT_SIZE, check_kinds, write_gt_suite

    kinds = check_kinds(_names(args.kinds)) if args.kinds is not None else EDIT_KINDS
    folders = write_gt_suite(
        args.out_dir, count=args.count, seed=args.seed, size=args.size or GT_SIZE, kinds=kinds
    )
    print(f"wrote {len(folders)} ground-truth samples to {args.out_dir}")
    if args.preview:
        from dragdiff.bench.dragbench import SampleRef, load_sample
        from dragdiff.io import atomic_save_image
        from dragdiff.viz import contact_sheet, draw_instruction

        rows = []
        for folder in folders:
            s = load_sample(SampleRef(folder.parent.name, folder.name, folder))
            assert s.target is not None
            rows.append([s.image, draw_instruction(s.image, s.instruction), s.target])
        sheet = contact_sheet(rows, labels=["source", "instruction", "exact target"], cell=s.image.width)
        atomic_save_image(sheet, args.preview)
        print(f"wrote {args.preview}")
    return 0


def _names(text: str) -> list[str]:
    """A comma-separated list of names, blanks dropped."""
    return [n.strip() for n in text.split(",") if n.strip()]


def method_names(text: str) -> list[str]:
    """``--methods`` as a list of preset names; a one-line error naming a bad one and the valid names."""
    names = _names(text)
    valid = ", ".join(sorted(PRESETS))
    if not names:
        raise ConfigError(f"--methods needs preset names separated by commas; valid names: {valid}")
    for name in names:
        if name not in PRESETS:
            raise ConfigError(f"--methods: unknown preset {name!r}; valid names: {valid}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods: a preset is named twice in {text!r}")
    return names


def run_bench(args: argparse.Namespace) -> int:
    from dragdiff.bench.runner import run_benchmark, run_methods
    from dragdiff.cli import quiet_libraries
    from dragdiff.config import parse_override, preset

    if args.methods is not None and args.preset is not None:
        raise ConfigError("give --preset or --methods, not both")
    names = method_names(args.methods) if args.methods is not None else [args.preset or DEFAULT_PRESET]
    configs, overrides = {}, {}
    for name in names:  # the same overrides for every preset, checked before anything runs
        config = preset(name)
        for text in args.overrides:
            key, value = parse_override(text, config)
            config = config.override(**{key: value})
            overrides[key] = value
        configs[name] = config
    quiet_libraries()  # no loading bars under the benchmark's own progress bar
    common: dict[str, Any] = dict(
        model=args.model,
        dift_model=args.dift_model,
        limit=args.limit,
        device=args.device,
        dtype=args.dtype,
        lora_cache_dir=Path(args.lora_cache) if args.lora_cache else None,
        model_config=args.model_config,
        vae=args.vae,
        dift_model_config=args.dift_model_config,
        progress=True,
        deterministic=args.deterministic,
    )
    if args.methods is None:
        description = {"preset": names[0], "overrides": overrides}
        summary = run_benchmark(
            args.bench_dir, args.output, configs[names[0]], description=description, **common
        )
    else:
        summary = run_methods(
            args.bench_dir, args.output, configs, description={"overrides": overrides}, **common
        )
    if summary is not None:
        print((Path(args.output) / "summary.md").read_text(), end="")
        print(f"results in {args.output}")
    return 0


def run_summarize(args: argparse.Namespace) -> int:
    from dragdiff.bench.runner import METHODS_FILE, summarize, summarize_methods

    if (Path(args.results) / METHODS_FILE).is_file():  # methods side by side (bench run --methods)
        summarize_methods(args.results)
    else:
        summarize(args.results)
    print((Path(args.results) / "summary.md").read_text(), end="")
    return 0
