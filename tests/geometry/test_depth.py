"""Depth order in the warp (dragdiff.geometry.depth): dragged content goes under what is in front of it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dragdiff.bench import gtsuite
from dragdiff.config import parse_override, preset
from dragdiff.geometry.depth import front_of
from dragdiff.geometry.support import segment_support
from dragdiff.geometry.warp import background_plate, composite, plan_warp
from dragdiff.model.scenes import render_masks
from dragdiff.types import DragInstruction

ORANGE, CYAN = (235, 130, 20), (30, 190, 210)


def _disc(size: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def _two_discs(orange_on_top: bool, size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An orange disc (centre 40, 48, radius 14) and a cyan one (64, 48, radius 16) overlapping it, on a grey
    gradient: (image, orange disc, cyan disc), the discs whole (before either hides the other)."""
    img = np.linspace(70, 190, size, dtype=np.float32)[None, :, None].repeat(size, 0).repeat(3, 2)
    orange, cyan = _disc(size, 40, 48, 14), _disc(size, 64, 48, 16)
    layers = [(orange, ORANGE), (cyan, CYAN)]  # drawn in order: the last is in front
    for region, rgb in layers[::-1] if orange_on_top else layers:
        img[region] = rgb
    return img.astype(np.uint8), orange, cyan


def _edit(img: np.ndarray, pairs: list, keep_depth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(the warp's picture, its plan's front mask)."""
    plan = plan_warp(img, DragInstruction.from_pairs(pairs), keep_depth=keep_depth)
    return composite(img, background_plate(img, plan), plan), plan.front


def test_content_dragged_towards_an_object_in_front_of_it_goes_under_it() -> None:
    img, _, cyan = _two_discs(orange_on_top=False)
    out, front = _edit(img, [((32, 48), (44, 48))])
    assert (front & cyan).sum() >= 0.9 * cyan.sum() and not (front & ~cyan).any()
    assert (out[cyan] == img[cyan]).all()  # the front disc is untouched, bit for bit
    over, _ = _edit(img, [((32, 48), (44, 48))], keep_depth=False)
    assert (np.abs(over[cyan].astype(int) - img[cyan]).max(axis=1) > 60).sum() > 50  # drawn over it


def test_content_lying_on_top_stays_on_top_when_dragged_over() -> None:
    img, orange, cyan = _two_discs(orange_on_top=True)
    out, front = _edit(img, [((40, 48), (52, 48))])
    assert not front.any()
    landed = _disc(96, 52, 48, 13) & cyan  # where the moved disc now covers the cyan one
    assert (np.abs(out[landed].astype(int) - ORANGE).max(axis=1) <= 2).mean() > 0.95


def test_what_the_front_object_hid_comes_out_when_dragged_sideways() -> None:
    """The orange disc, bitten by the cyan one in front, dragged up 18 px: what the cyan disc hid of it inside
    the hull of its visible outline (the lens between the bite's arc and its chord) comes out orange, not as
    the background."""
    img, orange, cyan = _two_discs(orange_on_top=False)
    visible = (orange & ~cyan).astype(np.uint8)
    hull = np.zeros_like(visible)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(visible)), 1)
    lens = np.roll((hull > 0) & cyan, -18, axis=0) & ~cyan  # where the lens lands, out from under the disc
    assert lens.sum() > 20
    out, _ = _edit(img, [((32, 48), (32, 30))])
    flat, _ = _edit(img, [((32, 48), (32, 30))], keep_depth=False)
    near_orange = 45  # the lens is 2-3 px wide: half of it lies in the moved outline's soft 1-px rim
    assert (np.abs(out[lens].astype(int) - ORANGE).max(axis=1) <= near_orange).mean() > 0.9
    assert (np.abs(flat[lens].astype(int) - ORANGE).max(axis=1) <= near_orange).mean() < 0.5


@pytest.mark.parametrize(("seed", "index"), [(0, 9), (0, 37), (0, 2)])
def test_a_concave_shape_s_notches_are_not_objects_in_front_of_it(seed: int, index: int) -> None:
    """A star, a crescent and a star dragged on textured backgrounds: their notches hold background, which
    GrabCut also segments; nothing is in front."""
    case = gtsuite.make_case(seed, index)
    source, _, mask, _ = gtsuite.render_case(case)
    image = np.asarray(source)
    labels = segment_support(image, np.array(case.handles), mask)
    front, hidden = front_of(image, labels if mask is None else np.where(mask, labels, 0))
    assert not front.any() and not hidden.any()


def test_the_ground_truth_suite_s_front_object_is_found_whole() -> None:
    """Seed 0, case 39: a shape half hidden behind a shaded red disc, dragged towards it."""
    case = gtsuite.make_case(0, 39)
    assert case.kind == "occluded"
    source, _, mask, _ = gtsuite.render_case(case)
    cover = render_masks([case.source], case.size)[0].numpy() > 0.5
    top = cover[-1]  # the front object: drawn last
    image = np.asarray(source)
    plan = plan_warp(image, DragInstruction.from_pairs(list(zip(case.handles, case.targets, strict=True))))
    assert (plan.front & top).sum() >= 0.9 * top.sum()
    near = cv2.dilate(top.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (plan.front & ~near).any()
    out = composite(image, background_plate(image, plan), plan)
    assert (out[plan.front] == image[plan.front]).all()
    Image.fromarray(out)  # a picture


def test_keep_depth_is_on_by_default_and_can_be_turned_off_from_the_command_line() -> None:
    config = preset("warp")
    assert config.warp.keep_depth is True
    assert parse_override("warp.keep_depth=false", config) == ("warp.keep_depth", False)
