"""Drop shadows move with their objects (dragdiff.geometry.shadow); no shadow, no change."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from dragdiff.geometry.warp import plan_warp, warp_preview
from dragdiff.types import DragInstruction

SIZE = 96


def _picture(cx: int, cy: int, shadow: float) -> np.ndarray:
    """A red disc (radius 12) casting a soft shadow 5 px down-right onto a grey gradient."""
    grad = np.linspace(90, 210, SIZE, dtype=np.float32)[None, :, None].repeat(SIZE, 0).repeat(3, 2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cast = ((xx - cx - 5) ** 2 + (yy - cy - 5) ** 2 <= 12**2).astype(np.float32)
    img = grad * (1 - shadow * cv2.GaussianBlur(cast, (0, 0), 1.5))[..., None]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 12**2] = (220, 30, 30)
    return np.round(img).astype(np.uint8)


def test_the_shadow_follows_the_object() -> None:
    src, want = _picture(30, 40, 0.4), _picture(62, 40, 0.4)
    ins = DragInstruction.from_pairs([((30, 40), (62, 40))])
    out = np.asarray(warp_preview(Image.fromarray(src), ins)).astype(float)
    old_shadow = (slice(53, 57), slice(38, 46))  # under the old disc's shadow, clear of both discs
    new_shadow = (slice(53, 57), slice(70, 78))
    for spot in (old_shadow, new_shadow):  # the shadow left with the disc, to fall where the disc went
        before = np.abs(src[spot] - want[spot].astype(float)).mean()
        after = np.abs(out[spot] - want[spot]).mean()
        assert before > 15 and after < 0.3 * before, (spot, before, after)


def test_no_shadow_no_change_to_the_background() -> None:
    src = _picture(30, 40, 0.0)
    plan = plan_warp(src, DragInstruction.from_pairs([((30, 40), (62, 40))]))
    assert not plan.shadow_old.any() and not plan.shadow_new.any()


def test_a_dark_object_beside_the_dragged_one_is_not_taken_for_its_shadow(monkeypatch) -> None:
    """Ground-truth seed 0, case 30: a blue triangle dragged over a black cross. The cross darkens the band
    around the triangle, but not every channel alike as a shadow would: left out of the fit, no shadow is
    found, and every pixel the exact edit leaves alone stays the source's (with the cross counted as
    darkening, a shadow was fitted to it and taken off: the cross came out lighter)."""
    from dragdiff.bench import gtsuite
    from dragdiff.geometry import shadow
    from dragdiff.geometry.warp import background_plate, composite

    case = gtsuite.make_case(0, 30)
    source, target, mask, _ = gtsuite.render_case(case)
    src, want = np.asarray(source), np.asarray(target)
    ins = DragInstruction.from_pairs(list(zip(case.handles, case.targets, strict=True)), mask=mask)
    untouched = (src == want).all(-1)

    def kept(plan) -> float:
        out = composite(src, background_plate(src, plan), plan)
        return float((out[untouched] == src[untouched]).all(-1).mean())

    plan = plan_warp(src, ins)
    assert not plan.shadow_old.any() and kept(plan) > 0.999
    monkeypatch.setattr(shadow, "ACHROMATIC", 9.0)  # every band pixel counted, as before
    before = plan_warp(src, ins)
    assert before.shadow_old.max() > 0.3 and kept(before) < 0.995


def test_a_darkening_too_deep_for_a_drop_shadow_is_left_alone(monkeypatch) -> None:
    """Ground-truth seed 0, case 14: a green hexagon dragged off a dark mottled background. A fit there
    explains the dark background around it as a shadow of opacity ≈ 0.8; taking that off brightened the
    uncovered area into a pale green blot. Deeper than ``MAX_OPACITY`` is no drop shadow (they let what is
    under them show through): nothing is taken off, and the uncovered area stays near the exact target."""
    from dragdiff.bench import gtsuite
    from dragdiff.geometry import shadow
    from dragdiff.geometry.warp import background_plate, composite

    case = gtsuite.make_case(0, 14)
    source, target, mask, _ = gtsuite.render_case(case)
    src, want = np.asarray(source), np.asarray(target).astype(float)
    ins = DragInstruction.from_pairs(list(zip(case.handles, case.targets, strict=True)), mask=mask)

    def error(plan) -> float:  # mean absolute error on the uncovered area, 8-bit levels
        out = composite(src, background_plate(src, plan), plan).astype(float)
        return float(np.abs(out[plan.hole] - want[plan.hole]).mean())

    plan = plan_warp(src, ins)
    assert plan.shadow_old.max() <= shadow.MAX_OPACITY and error(plan) < 35
    monkeypatch.setattr(shadow, "MAX_OPACITY", 0.95)  # the bound before
    assert error(plan_warp(src, ins)) > 55
