"""Filling a hole in a repeating background from one period away (dragdiff.geometry.texture)."""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.geometry.texture import shift_fill

SIZE = 96


def _checks(period: int = 8) -> np.ndarray:
    """Green checks of ``period`` px squares (two shades), as the suites' patterned backgrounds."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    light = ((yy // period + xx // period) % 2).astype(bool)
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[light], img[~light] = (120, 200, 120), (40, 150, 50)
    return img


def _hole() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return (xx - 48) ** 2 + (yy - 48) ** 2 <= 11**2


def test_a_hole_in_checks_is_filled_with_the_checks() -> None:
    truth, hole = _checks(), _hole()
    smeared = truth.copy()
    smeared[hole] = cv2.inpaint(truth, hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)[hole]  # what Telea gives
    out, filled = shift_fill(smeared, hole, ~hole)
    assert filled.sum() == hole.sum()
    assert (out[hole] == truth[hole]).all()  # the pattern exactly
    assert (out[~hole] == smeared[~hole]).all()  # nothing else touched
    assert np.abs(smeared[hole].astype(int) - truth[hole]).mean() > 10  # and Telea's smear was not


def test_an_object_one_period_away_is_not_copied_into_the_hole() -> None:
    """Two places match the hole's ring exactly (32 px above and below, two periods): the first one tried
    holds a red square where the hole's copy would come from, so that copy is refused (its colours are not
    the ring's) and the clean one is taken."""
    truth, hole = _checks(), _hole()
    used = cv2.dilate(hole.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # the hole and its ring
    above, below = np.roll(used, -32, axis=0), np.roll(used, 32, axis=0)
    stays = (used & ~hole) | above | below  # only those two places may be copied from
    picture = truth.copy()
    picture[hole] = 0
    picture[48 - 32 - 5 : 48 - 32 + 6, 43:54] = (220, 30, 30)  # inside the copy from above, clear of its ring
    ring_below = below & ~np.roll(hole, 32, axis=0)
    picture[ring_below] += 3  # the place below matches a little worse: the one above is tried first
    out, filled = shift_fill(picture, hole, stays)
    assert filled.sum() == hole.sum()
    assert (out[hole] == truth[hole]).all()  # the checks, from below
    assert not (out[hole] == (220, 30, 30)).all(axis=1).any()


def test_a_background_that_does_not_repeat_is_left_to_the_other_fill() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)  # no offset matches its ring
    hole = _hole()
    out, filled = shift_fill(noise, hole, ~hole)
    assert not filled.any() and (out == noise).all()
