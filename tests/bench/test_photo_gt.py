"""Photograph-sized ground truth (issue #20), on a small version: exact scores, and the warp through an auto
ROI within the bar (handle error <= 4 px, PSNR away from the uncovered >= 30 dB, untouched pixels exact)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import build_tiny_pipeline
from dragdiff.bench import photo_gt as pg
from dragdiff.config import preset
from dragdiff.editor import DragEditor

SMALL = (768, 576)
MASKED = (9, 12, 15)  # masked cases, near / mid / far


def test_cases_are_reproducible_rigid_whole_pixel_moves() -> None:
    a, b = pg.make_case(0, 4, SMALL), pg.make_case(0, 4, SMALL)
    assert a == b and all(isinstance(v, int) for v in a.move)
    r = pg.render_case(a)
    assert r.source.shape == (SMALL[1], SMALL[0], 3) and r.mask is None
    assert r.uncovered.any() and (r.region | ~r.uncovered).all()  # the uncovered lie inside the region
    assert np.array_equal(r.source[~r.region], r.target[~r.region])
    assert pg.render_case(pg.make_case(0, 9, SMALL)).mask is not None


def test_the_exact_target_scores_perfectly_and_no_edit_scores_the_drag() -> None:
    r = pg.render_case(pg.make_case(0, 3, SMALL))
    exact = pg.photo_metrics(r, r.target)
    assert exact["handle_error"] < 0.5 and exact["psnr_in_away"] == 100.0 and exact["keep_exact_out"] == 1.0
    none = pg.photo_metrics(r, r.source)
    assert abs(none["handle_error"] - none["handle_error_start"]) < 1 and none["psnr_in_away"] < 20


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> DragEditor:
    return DragEditor(build_tiny_pipeline(), lora_cache_dir=tmp_path_factory.mktemp("lora"))


@pytest.mark.parametrize("index", MASKED)
def test_the_warp_moves_full_resolution_pixels_within_the_bar(editor: DragEditor, index: int) -> None:
    r = pg.render_case(pg.make_case(0, index, SMALL))
    config = preset("warp").override(**{"warp.fill_steps": 4})
    result = editor.edit(Image.fromarray(r.source), r.instruction(), config)
    scores = pg.photo_metrics(r, np.asarray(result.image))
    assert scores["handle_error"] <= 4 and scores["psnr_in_away"] >= 30
    assert scores["keep_exact_out"] == 1.0  # outside the mask: the input bit for bit
