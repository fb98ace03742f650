"""The explicit warp (dragdiff.geometry): segmentation, field, composite, bad input — on exact scenes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dragdiff.config import preset
from dragdiff.geometry.field import mls_similarity, two_point_affine
from dragdiff.geometry.warp import auto_seam, background_plate, composite, plan_warp, warp_preview
from dragdiff.types import DragInstruction, InputError


def _scene(cx: int, cy: int, size: int = 64) -> np.ndarray:
    """A red disc (radius 8) on a horizontal grey gradient."""
    grad = np.linspace(60, 200, size, dtype=np.float32)[None, :, None].repeat(size, 0).repeat(3, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= 8**2
    img = grad.copy()
    img[disc] = (220, 30, 30)
    return img.astype(np.uint8)


def test_single_handle_on_centre_moves_the_whole_disc_exactly() -> None:
    src, want = _scene(20, 30), _scene(40, 30)
    ins = DragInstruction.from_pairs([((20, 30), (40, 30))])
    out = np.asarray(warp_preview(Image.fromarray(src), ins))
    yy, xx = np.mgrid[0:64, 0:64]
    inner = (xx - 40) ** 2 + (yy - 30) ** 2 <= 7**2  # inside the 1-px soft edge
    assert (out[inner] == (220, 30, 30)).all()  # the disc landed whole at its target
    far = np.zeros(src.shape[:2], bool)
    far[:, 52:] = True
    assert (out[far] == src[far]).all()  # untouched pixels are the source's, bit for bit
    assert np.abs(out[:, 10:30].astype(int) - want[:, 10:30]).mean() < 3  # the uncovered area is background


def test_pixels_outside_the_mask_never_change() -> None:
    src = _scene(20, 30)
    mask = np.zeros((64, 64), bool)
    mask[15:45, 5:55] = True
    ins = DragInstruction.from_pairs([((20, 30), (38, 30))], mask=mask)
    plan = plan_warp(src, ins)
    out = composite(src, background_plate(src, plan), plan)
    assert (out[~mask] == src[~mask]).all()
    assert plan.hole.any() and not (plan.hole & ~mask).any()


def test_the_seam_follows_how_sure_the_support_s_outline_is() -> None:
    # a picture segmented at its own size repaints a 1-px band around the uncovered area; one segmented
    # smaller and upsampled (longer than 128 px) a 2-px band; an explicit seam is used as given
    for size, want in ((64, 1), (256, 2)):
        src = _scene(size // 3, size // 2, size)
        ins = DragInstruction.from_pairs([((size // 3, size // 2), (size // 3 + 12, size // 2))])
        auto = plan_warp(src, ins)
        assert np.array_equal(auto.hole, plan_warp(src, ins, seam=want).hole)
        assert not np.array_equal(auto.hole, plan_warp(src, ins, seam=3 - want).hole)
    assert auto_seam((96, 128)) == 1 and auto_seam((96, 129)) == 2
    # the web editor's preview of a large picture scales the edit's seam, not its own size's
    src = _scene(170, 128, 512)
    ins = DragInstruction.from_pairs([((170, 128), (210, 128))])
    assert warp_preview(Image.fromarray(src), ins, max_side=128) == warp_preview(
        Image.fromarray(src), ins, max_side=128, seam=2
    )


def test_handle_outside_the_mask_is_a_one_line_error() -> None:
    mask = np.zeros((64, 64), bool)
    mask[:, 40:] = True
    ins = DragInstruction.from_pairs([((20, 30), (45, 30))], mask=mask)
    with pytest.raises(InputError, match=r"handle 1 at \(20, 30\) is outside the editable mask"):
        plan_warp(_scene(20, 30), ins)


def test_a_field_that_folds_is_an_error() -> None:
    src = _scene(30, 30)
    # three handles on one disc all dragged to one point: the shape would collapse onto itself
    ins = DragInstruction.from_pairs([((24, 30), (30, 30)), ((36, 30), (30, 30)), ((30, 24), (30, 30))])
    with pytest.raises(InputError, match="fold"):
        plan_warp(src, ins)


def test_two_point_maps_are_exact_at_the_handles() -> None:
    src = np.array([[10.0, 10.0], [20.0, 10.0]])
    dst = np.array([[5.0, 12.0], [25.0, 12.0]])
    for stretch in (False, True):
        a = two_point_affine(src, dst, stretch)
        np.testing.assert_allclose(src @ a[:, :2].T + a[:, 2], dst, atol=1e-9)
    stretch = two_point_affine(src, dst, True)
    assert stretch[1, 1] == pytest.approx(1.0)  # a pull along x leaves the height alone
    pts = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(mls_similarity(pts, src[:1], dst[:1]), pts + dst[0] - src[0])


def _red_extent(img: np.ndarray) -> tuple[int, int]:
    red = (img[..., 0] > 150) & (img[..., 1] < 100)
    ys, xs = np.nonzero(red)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize(
    ("pairs", "want"),
    [
        ([((26, 32), (22, 32)), ((38, 32), (42, 32))], (28, 17)),  # along x: an edge pull, wider only (×5/3)
        ([((28, 28), (25, 25)), ((36, 36), (39, 39))], (30, 30)),  # diagonal: a corner pull, larger (×7/4)
    ],
    ids=["horizontal pull stretches", "diagonal pull scales"],
)
def test_two_handles_on_a_disc_stretch_along_an_axis_and_scale_across(pairs, want) -> None:
    src = _scene(32, 32)
    out = np.asarray(warp_preview(Image.fromarray(src), DragInstruction.from_pairs(pairs)))
    assert _red_extent(src) == (17, 17)
    width, height = _red_extent(out)
    assert abs(width - want[0]) <= 1.5 and abs(height - want[1]) <= 1.5, (width, height)


def test_warp_preset_through_the_editor(tiny_pipeline) -> None:
    from dragdiff.editor import DragEditor

    editor = DragEditor(tiny_pipeline)
    image = Image.fromarray(_scene(20, 30))
    ins = DragInstruction.from_pairs([((20, 30), (40, 30))])
    cfg = preset("warp").override(**{"warp.fill_steps": 4})
    result = editor.edit(image, ins, cfg)
    out, src = np.asarray(result.image), np.asarray(image)
    assert result.image.size == image.size and result.record["method"] == "warp"
    assert (out[:, 52:] == src[:, 52:]).all()
    assert (out[30, 36:45] == (220, 30, 30)).all()  # the disc's pixels are the source's, at the target


@pytest.mark.parametrize("textured", [False, True])
def test_auto_fill_paints_a_textured_background_with_the_model_and_keeps_a_smooth_one(
    tiny_pipeline, textured: bool
) -> None:
    from dragdiff.editor import DragEditor

    img = _scene(20, 30)
    if textured:  # a coarse checker behind the disc: no smooth fill can be right there
        yy, xx = np.mgrid[0:64, 0:64]
        checker = ((xx // 2 + yy // 2) % 2 == 0) & ~np.all(img == (220, 30, 30), axis=-1)
        img[checker] = img[checker] // 2
    image = Image.fromarray(img)
    ins = DragInstruction.from_pairs([((20, 30), (40, 30))])
    editor = DragEditor(tiny_pipeline)
    auto = editor.edit(image, ins, preset("warp").override(**{"warp.fill_steps": 4}))
    telea = editor.edit(image, ins, preset("warp").override(**{"warp.fill": "classical"}))
    hole = auto.record["model_filled_pixels"]
    assert auto.record["uncovered_pixels"] > 0
    if textured:
        assert hole > 0 and not np.array_equal(np.asarray(auto.image), np.asarray(telea.image))
    else:
        assert hole == 0 and np.array_equal(np.asarray(auto.image), np.asarray(telea.image))


def test_auto_fill_copies_faint_checks_that_telea_would_smear(tiny_pipeline) -> None:
    """Low-contrast 8-px checks: too smooth inside each square for the texture test (the model is not
    asked), but they repeat, so the uncovered area is copied from a period away: the checks exactly, where
    Telea's fill (``warp.fill=classical``) smears them."""
    from dragdiff.editor import DragEditor

    size = 96
    yy, xx = np.mgrid[0:size, 0:size]
    checks = np.where(((yy // 8 + xx // 8) % 2 == 0)[..., None], (120, 170, 120), (80, 130, 80))
    img = checks.astype(np.uint8)
    img[(xx - 36) ** 2 + (yy - 48) ** 2 <= 9**2] = (220, 30, 30)
    ins = DragInstruction.from_pairs([((36, 48), (60, 48))])
    editor = DragEditor(tiny_pipeline)
    classical = preset("warp").override(**{"warp.fill": "classical"})
    auto = editor.edit(Image.fromarray(img), ins, preset("warp"), roi="full")  # room for a period's copy
    telea = editor.edit(Image.fromarray(img), ins, classical, roi="full")
    uncovered = ((xx - 36) ** 2 + (yy - 48) ** 2 <= 8**2) & ((xx - 60) ** 2 + (yy - 48) ** 2 > 10**2)
    assert auto.record["model_filled_pixels"] == 0
    want = checks[uncovered]
    assert np.abs(np.asarray(auto.image)[uncovered].astype(int) - want).max() <= 2
    assert np.abs(np.asarray(telea.image)[uncovered].astype(int) - want).mean() > 8
