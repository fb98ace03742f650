"""Helpers of ``benchmarks/multi_gpu.sh`` (issue #7): the model folder, the DragBench-format copy, the report.

    python benchmarks/multi_gpu.py model DIR [--tiny] [--device cuda] [--dtype fp16]
    python benchmarks/multi_gpu.py dragbench-copy GT_DIR OUT_DIR
    python benchmarks/multi_gpu.py report WORK_DIR --json OUT.json --md OUT.md [--stages-dir DIR]

``model`` saves the SD-1.5-architecture random-weight pipeline of ``edit_sd15.py`` (fixed seed) as a diffusers
folder, so every benchmark process loads the same weights. ``dragbench-copy`` copies a ground-truth suite
without its targets, so the runner scores it as DragBench (IF, MD). ``report`` reads ``WORK_DIR/stages.jsonl``
(one line per stage, written by the shell script), the results folders and the ``nvidia-smi`` samples, and
writes wall times, speed-ups, per-GPU utilisation and memory, and the check that the N-GPU run's merged
per-sample records equal the 1-GPU run's (see ``TOLERANCES``). A stage with ``"repeat_of"`` reruns another
stage's configuration unchanged: its per-sample differences from that stage are the measured run-to-run noise,
reported next to the 1-vs-N differences. ``--stages-dir`` also writes one JSON per stage (its summary and
per-sample records), so a run cut later still leaves every finished stage.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

# How far the N-GPU record of a sample may be from the 1-GPU one: |a - b| <= abs + rel * |b|. Two GPUs of one
# model run the same kernels, but some CUDA backward kernels (attention, grid_sample) add in a varying order,
# so the last bits may differ and grow over 80 optimisation steps; these bounds are well under what any
# comparison between configurations would read.
PIXEL_TOL = (1.0, 0.0)  # handle errors, MD, tracked handles: at most 1 px
UNIT_TOL = (5e-3, 1e-3)  # LPIPS-type scores, IF, SSIM (all in [0, 1] or [-1, 1])
TOLERANCES: dict[str, tuple[float, float]] = {
    "handle_error": PIXEL_TOL,
    "handle_error_start": PIXEL_TOL,
    "md": PIXEL_TOL,
    "md_pairs": PIXEL_TOL,
    "final_handles": PIXEL_TOL,
    "if": UNIT_TOL,
    "lpips_outside_mask": UNIT_TOL,
    "target_lpips_in": UNIT_TOL,
    "keep_lpips_out": UNIT_TOL,
    "keep_ssim_out": UNIT_TOL,
    "psnr_outside_mask": (0.1, 1e-3),  # dB
    "target_psnr_in": (0.1, 1e-3),
    "keep_psnr_out": (0.1, 1e-3),
    "iterations": (0.0, 0.0),
}
DEFAULT_TOL = (1e-3, 1e-3)  # a metric not listed above


# --- model and data ---------------------------------------------------------------------------------------


def make_model(out: Path, tiny: bool, device: str, dtype: str) -> None:
    """Build ``edit_sd15.py``'s random-weight SD-1.5 pipeline (seed 0); save it as a diffusers folder."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edit_sd15 import build_pipeline

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    pipe = build_pipeline(tiny, torch.device(device), dtypes[dtype])
    pipe.save_pretrained(out)
    print(f"wrote {out} ({'tiny' if tiny else 'SD-1.5'} architecture, random weights, {dtype})")


def dragbench_copy(gt_dir: Path, out: Path) -> None:
    """Copy a ground-truth suite without its ground truth: DragBench's files only."""
    from dragdiff.bench.dragbench import GT_FILE, REGION_FILE, TARGET_FILE

    shutil.copytree(gt_dir, out, ignore=shutil.ignore_patterns(GT_FILE, REGION_FILE, TARGET_FILE))
    print(f"wrote {out} (DragBench format: no {TARGET_FILE}, {GT_FILE}, {REGION_FILE})")


# --- reading a stage --------------------------------------------------------------------------------------


def read_records(results: Path) -> list[dict[str, Any]]:
    """Every per-sample record of a results folder (sorted by path)."""
    return [json.loads(p.read_text()) for p in sorted((results / "samples").glob("*/*.json"))]


def gpu_samples(path: Path) -> dict[str, dict[str, float]]:
    """Per GPU index: mean utilisation (%), samples, peak memory used (MiB) from ``nvidia-smi -lms`` lines."""
    per: dict[str, list[tuple[float, float]]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = [p.strip().removesuffix("%").removesuffix("MiB").strip() for p in line.split(",")]
            try:
                index, util, mem = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                continue  # a header, a cut-off last line or "[N/A]"
            per.setdefault(index, []).append((util, mem))
    return {
        i: {
            "util_mean_pct": sum(u for u, _ in v) / len(v),
            "util_samples": len(v),
            "mem_peak_mib": max(m for _, m in v),
        }
        for i, v in sorted(per.items())
    }


def stage_summary(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage line from stages.jsonl plus what its results folder and GPU samples say."""
    if "results" not in stage:  # a set-up stage: its line is all there is
        return stage
    results = Path(stage["results"])
    records = read_records(results) if results.is_dir() else []
    ok = [r for r in records if r.get("status") == "ok"]
    per_rank: dict[int, float] = {}
    for r in ok:
        per_rank[r["rank"]] = per_rank.get(r["rank"], 0.0) + r["seconds"]
    return {
        **stage,
        "samples_recorded": len(records),
        "samples_ok": len(ok),
        "edit_seconds_total": sum(r["seconds"] for r in ok),
        "edit_seconds_per_rank": {str(k): v for k, v in sorted(per_rank.items())},
        "edit_seconds_per_sample": {r["key"]: r["seconds"] for r in ok},
        "gpus": gpu_samples(Path(stage["smi"])) if stage.get("smi") else {},
    }


# --- the equivalence check ------------------------------------------------------------------------------


def _within(a: Any, b: Any, tol: tuple[float, float]) -> tuple[bool, float]:
    """(a equals b within tol, the largest |a - b|), element-wise through lists."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False, math.inf
        pairs = [_within(x, y, tol) for x, y in zip(a, b, strict=True)]
        return all(ok for ok, _ in pairs), max((d for _, d in pairs), default=0.0)
    if isinstance(a, int | float) and isinstance(b, int | float):
        diff = abs(float(a) - float(b))
        if math.isnan(diff):
            return math.isnan(float(a)) and math.isnan(float(b)), 0.0
        return diff <= tol[0] + tol[1] * abs(float(b)), diff
    return a == b, 0.0 if a == b else math.inf


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a record that must not depend on the run: metrics, iterations, tracked handles."""
    values = dict(record.get("metrics", {}))
    for key in ("iterations", "final_handles", "status", "pairs"):
        if key in record:
            values[key] = record[key]
    return values


def compare_runs(single: Path, multi: Path, bench: Path, world: int) -> dict[str, Any]:
    """Do the N-GPU run's per-sample records equal the 1-GPU run's (same samples once each, same metrics)?"""
    from dragdiff.bench.dragbench import list_samples

    expected = [r.key for r in list_samples(bench)]
    one, many = read_records(single), read_records(multi)
    keys_one, keys_many = [r["key"] for r in one], [r["key"] for r in many]
    merged = (
        json.loads((multi / "summary.json").read_text()).get("samples", [])
        if (multi / "summary.json").is_file()
        else []
    )
    sharding = {r["key"]: expected.index(r["key"]) % world for r in many if r["key"] in expected}
    checks: dict[str, Any] = {
        "expected_samples": len(expected),
        "same_samples": sorted(keys_one) == sorted(keys_many) == sorted(expected),
        "no_duplicates": len(set(keys_many)) == len(keys_many) and len(set(merged)) == len(merged),
        "merged_summary_lists_all": sorted(merged) == sorted(expected),
        "all_ok": all(r.get("status") == "ok" for r in one + many),
        "ranks_used": sorted({r["rank"] for r in many}),
        "sharded_as_expected": all(r["rank"] == sharding.get(r["key"]) for r in many),
    }
    by_key = {r["key"]: r for r in one}
    max_diff: dict[str, float] = {}
    failures, identical, samples, diffs = [], 0, {}, {}
    for r in many:
        ref = by_key.get(r["key"])
        if ref is None:
            continue
        a, b = _comparable(r), _comparable(ref)
        identical += a == b
        samples[r["key"]] = {"device_1gpu": ref.get("device"), "device_ngpu": r.get("device")}
        diffs[r["key"]] = {}
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b:
                failures.append(f"{r['key']}: {name} only in one run")
                continue
            ok, diff = _within(a[name], b[name], TOLERANCES.get(name, DEFAULT_TOL))
            max_diff[name] = max(max_diff.get(name, 0.0), diff)
            diffs[r["key"]][name] = diff
            if not ok:
                failures.append(f"{r['key']}: {name} {b[name]} (1 GPU) vs {a[name]} ({world} GPUs)")
    checks.update(
        metrics_within_tolerance=not failures and bool(many),
        bitwise_identical_samples=identical,
        compared_samples=len(diffs),
        max_abs_diff=max_diff,
        sample_abs_diff=diffs,
        failures=failures,
        samples=samples,
    )
    checks["equivalent"] = (
        all(
            checks[k]
            for k in (
                "same_samples",
                "no_duplicates",
                "merged_summary_lists_all",
                "all_ok",
                "sharded_as_expected",
            )
        )
        and checks["metrics_within_tolerance"]
    )
    return checks


# --- the report -----------------------------------------------------------------------------------------


def _guarded(func: Any, *args: Any) -> Any:
    """``func(*args)``, or ``{"report_error": ...}``: one unreadable stage must not lose the whole report."""
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - reported, never raised: the report is the run's only output
        return {
            "report_error": f"{func.__name__}: {type(exc).__name__}: {exc}",
            "args": [str(a) for a in args],
        }


def build_report(work: Path) -> dict[str, Any]:
    lines = (work / "stages.jsonl").read_text().splitlines() if (work / "stages.jsonl").is_file() else []
    stages = [_guarded(stage_summary, json.loads(line)) for line in lines if line.strip()]
    meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    runs = {(s["suite"], s["nproc"]): s for s in stages if "suite" in s and not s.get("repeat_of")}
    repeats = {s["repeat_of"]: s for s in stages if s.get("repeat_of") and "results" in s}
    suites: dict[str, Any] = {}
    for suite in sorted({s for s, _ in runs}):
        one = runs.get((suite, 1))
        many = [s for (name, n), s in runs.items() if name == suite and n > 1]
        if one is not None and many:
            suites[suite] = _guarded(compare_configurations, one, many[0])
        if one is not None and one["name"] in repeats:
            noise = _guarded(noise_floor, one, repeats[one["name"]])
            suites.setdefault(suite, {})["noise"] = noise
    return {
        "meta": meta,
        "tolerances": {**TOLERANCES, "other": DEFAULT_TOL},
        "stages": stages,
        "suites": suites,
    }


def compare_configurations(one: dict[str, Any], multi: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups and the equivalence check of one suite's 1-GPU and N-GPU stages."""
    row: dict[str, Any] = {"nproc": multi["nproc"]}
    finished = one.get("rc") == 0 and multi.get("rc") == 0
    row["speedup_wall"] = one["wall_s"] / multi["wall_s"] if finished and multi["wall_s"] else None
    slowest = max(multi["edit_seconds_per_rank"].values(), default=0.0)
    row["speedup_edit_critical_path"] = (
        one["edit_seconds_total"] / slowest
        if finished and slowest and one["samples_ok"] == multi["samples_ok"]
        else None
    )  # 1-GPU edit seconds over the slowest rank's: the speed-up without start-up costs
    if Path(one["results"]).is_dir() and Path(multi["results"]).is_dir():
        row["equivalence"] = _guarded(
            compare_runs, Path(one["results"]), Path(multi["results"]), Path(one["bench"]), multi["nproc"]
        )
    return row


def noise_floor(one: dict[str, Any], repeat: dict[str, Any]) -> dict[str, Any]:
    """The same configuration run twice: its per-sample differences are the measured run-to-run noise."""
    check = compare_runs(Path(one["results"]), Path(repeat["results"]), Path(one["bench"]), 1)
    keep = ("compared_samples", "bitwise_identical_samples", "max_abs_diff", "sample_abs_diff", "failures")
    return {"stage": repeat["name"], "repeat_of": one["name"], **{k: check[k] for k in keep}}


def write_stage_files(report: dict[str, Any], folder: Path) -> None:
    """One JSON per stage: its summary line and, for a bench run, its per-sample records."""
    folder.mkdir(parents=True, exist_ok=True)
    for stage in report["stages"]:
        name = stage.get("name") or "unreadable"
        data = dict(stage)
        if "results" in stage and Path(stage["results"]).is_dir():
            data["records"] = read_records(Path(stage["results"]))
            run_json = Path(stage["results"]) / "run.json"
            if run_json.is_file():
                data["deterministic"] = json.loads(run_json.read_text()).get("deterministic")
        _write(folder / f"{name}.json", json.dumps(data, indent=2, default=str) + "\n")


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: the report is rewritten after every stage and may be cut at any time."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _num(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


_CHECKS = (  # equivalence fields shown in the table, in order
    "same_samples", "no_duplicates", "merged_summary_lists_all", "all_ok", "sharded_as_expected",
    "metrics_within_tolerance",
)  # fmt: skip


def _stage_row(s: dict[str, Any], report: dict[str, Any]) -> str:
    if "suite" not in s or "report_error" in s:  # a set-up stage (or an unreadable one)
        name = s.get("name", s.get("report_error"))
        return f"| {name} | | {s.get('rc')} | {_num(s.get('wall_s'))} | | | | | |"
    suite = report["suites"].get(s["suite"], {})
    speed = "1.00"
    if s["nproc"] > 1:
        speed = f"{_num(suite.get('speedup_wall'), '{:.2f}')} / "
        speed += _num(suite.get("speedup_edit_critical_path"), "{:.2f}")
    ranks = ", ".join(f"{v:.1f}" for v in s["edit_seconds_per_rank"].values()) or "-"
    util = ", ".join(f"{i}: {g['util_mean_pct']:.0f}" for i, g in s["gpus"].items()) or "-"
    mem = ", ".join(f"{i}: {g['mem_peak_mib']:.0f}" for i, g in s["gpus"].items()) or "-"
    status = "skipped" if s.get("skipped") else ("timeout" if s.get("timed_out") else s.get("rc"))
    count = report["meta"].get("count", "?")
    return (
        f"| {s['name']} | {s['nproc']} | {status} | {_num(s.get('wall_s'))} | {s['samples_ok']}/{count} "
        f"| {ranks} | {speed} | {util} | {mem} |"
    )


def _equivalence_lines(suite: str, row: dict[str, Any]) -> list[str]:
    eq = row.get("equivalence")
    problem = row.get("report_error") or (eq or {}).get("report_error")
    if eq is None or problem:
        return [f"- {suite}: no equivalence check ({problem or 'a results folder is missing'})"]
    verdict = "yes" if eq["equivalent"] else "NO"
    checks = ", ".join(f"{k} {eq[k]}" for k in _CHECKS)
    diffs = ", ".join(f"{k} {v:.3g}" for k, v in sorted(eq["max_abs_diff"].items())) or "-"
    same = f"{eq['bitwise_identical_samples']}/{eq['expected_samples']}"
    return [
        f"- **{suite}: 1 GPU vs {row['nproc']} GPUs equivalent at the stated tolerance: {verdict}** "
        f"({checks}; ranks {eq['ranks_used']}; bit-identical samples {same}); max |diff|: {diffs}",
        *[f"  - {f}" for f in eq["failures"][:12]],
    ]


def _noise_lines(suite: str, row: dict[str, Any]) -> list[str]:
    """The noise floor (same-configuration repeat) next to the 1-vs-N differences, metric by metric."""
    noise = row.get("noise")
    if noise is None:
        return [f"- {suite}: no noise floor (no same-configuration repeat ran)"]
    if "report_error" in noise:
        return [f"- {suite}: no noise floor ({noise['report_error']})"]
    same = f"{noise['bitwise_identical_samples']}/{noise['compared_samples']}"
    lines = [
        f"- **{suite}: noise floor** ({noise['stage']} vs {noise['repeat_of']}: the same configuration, GPU "
        f"and LoRAs; {noise['compared_samples']} samples, bit-identical {same}; within the tolerance: "
        f"{'yes' if not noise['failures'] else 'NO'})",
        "",
        "| metric | tolerance (abs, rel) | max abs diff 1 vs N GPUs | max abs diff repeat (noise floor) "
        "| 1-vs-N within the noise floor |",
        "|---|---|---:|---:|---|",
    ]
    multi = (row.get("equivalence") or {}).get("max_abs_diff", {})
    for name in sorted((set(noise["max_abs_diff"]) | set(multi)) - {"status", "pairs"}):
        a, b = multi.get(name), noise["max_abs_diff"].get(name)
        within = "-" if a is None or b is None else ("yes" if a <= b else "no")
        tol = TOLERANCES.get(name, DEFAULT_TOL)
        lines.append(
            f"| {name} | {tol[0]:g}, {tol[1]:g} | {_num(a, '{:.3g}')} | {_num(b, '{:.3g}')} | {within} |"
        )
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    """The table printed at the end of the run, then one equivalence verdict per suite."""
    out = [
        "| stage | GPUs | exit | wall (s) | samples ok | edit s per rank | speed-up (wall / edit) "
        "| GPU util mean % | GPU mem peak MiB |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
        *[_stage_row(s, report) for s in report["stages"]],
        "",
    ]
    det = report["meta"].get("deterministic")
    out.append(f"deterministic mode (`bench run --deterministic`): {'on' if det else 'off'}")
    out.append("")
    for suite, row in report["suites"].items():
        if "nproc" in row or "report_error" in row:
            out += _equivalence_lines(suite, row)
        out += _noise_lines(suite, row)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model", help="save the random-weight SD-1.5 pipeline folder")
    m.add_argument("out", type=Path)
    m.add_argument("--tiny", action="store_true", help="the tiny model of the same topology (64 px)")
    m.add_argument("--device", default="cuda")
    m.add_argument("--dtype", default="fp16", choices=("fp32", "fp16", "bf16"))
    c = sub.add_parser("dragbench-copy", help="copy a ground-truth suite without its ground truth")
    c.add_argument("gt_dir", type=Path)
    c.add_argument("out", type=Path)
    r = sub.add_parser("report", help="write the report of a multi_gpu.sh work folder")
    r.add_argument("work", type=Path)
    r.add_argument("--json", type=Path, required=True)
    r.add_argument("--md", type=Path, default=None)
    r.add_argument("--stages-dir", type=Path, default=None, help="also write one JSON per stage here")
    args = parser.parse_args(argv)
    if args.command == "model":
        make_model(args.out, args.tiny, args.device, args.dtype)
    elif args.command == "dragbench-copy":
        dragbench_copy(args.gt_dir, args.out)
    else:
        report = build_report(args.work)
        _write(args.json, json.dumps(report, indent=2, default=str) + "\n")
        if args.stages_dir is not None:
            _guarded(write_stage_files, report, args.stages_dir)
        table = _guarded(markdown, report)
        table = table if isinstance(table, str) else f"no table: {table['report_error']}\n"
        if args.md is not None:
            _write(args.md, table)
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
