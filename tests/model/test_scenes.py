"""Procedural scenes: deterministic rendering, exact edits, captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dragdiff.model import scenes as sc
from dragdiff.types import InputError

S = 64


def _scene(kind: str = "star", **obj) -> sc.Scene:
    fields = dict(
        kind=kind, colour="red", rgb=sc.PALETTE["red"], x=0.4, y=0.45, size=0.2, shade=0.5, shadow=0.0
    )
    fields.update(obj)
    return sc.Scene(
        sc.Background("plain", "white", sc.PALETTE["white"], sc.PALETTE["white"]), (sc.SceneObject(**fields),)
    )


def _centroid(mask: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(
        torch.arange(S, dtype=torch.float64), torch.arange(S, dtype=torch.float64), indexing="ij"
    )
    m = mask.double()
    return float((m * xs).sum() / m.sum()), float((m * ys).sum() / m.sum())


def test_render_is_deterministic_and_in_range():
    batch = sc.random_scenes(np.random.default_rng(3), 6)
    a, b = sc.render(batch, S), sc.render(batch, S)
    assert a.shape == (6, 3, S, S)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    # a scene renders the same alone as inside a batch padded to more objects
    alone = sc.render(batch[2:3], S)
    assert torch.allclose(alone[0], a[2], atol=1e-5)
    assert torch.equal(sc.render(batch[2], S), alone[0])  # a single Scene gives one (3, S, S) image


def test_random_scene_same_seed_same_scene():
    assert sc.random_scene(np.random.default_rng(7)) == sc.random_scene(np.random.default_rng(7))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert sc.random_scene(g1) == sc.random_scene(g2)


@pytest.mark.parametrize("kind", sc.KINDS)
def test_every_kind_is_drawn_in_its_colour_at_its_place(kind):
    img = sc.render([_scene(kind, shade=0.0)], S)[0]  # (3, S, S)
    red = (img[0] > 0.7) & (img[1] < 0.3) & (img[2] < 0.3)
    assert red.sum() > 0.02 * S * S, kind
    cx, cy = _centroid(red)
    assert abs(cx - 0.4 * S) < 0.1 * S and abs(cy - 0.45 * S) < 0.1 * S, (kind, cx, cy)


def test_move_shifts_the_object_pixels_exactly():
    scene = _scene("heart", rotation=0.3, sx=1.2)
    dx, dy = 10 / S, -6 / S  # whole pixels, so the moved mask is the same mask shifted
    before = sc.render_masks([scene], S)[0, 0]
    after = sc.render_masks([sc.move(scene, 0, dx, dy)], S)[0, 0]
    assert torch.allclose(torch.roll(before, shifts=(-6, 10), dims=(0, 1)), after, atol=1e-4)
    (bx, by), (ax, ay) = _centroid(before), _centroid(after)
    assert ax - bx == pytest.approx(10, abs=1e-3) and ay - by == pytest.approx(-6, abs=1e-3)


def test_move_leaves_other_objects_and_the_input_untouched():
    scene = sc.random_scene(np.random.default_rng(11), min_objects=3, max_objects=3)
    moved = sc.move(scene, 1, 0.1, 0.05)
    assert moved.objects[0] == scene.objects[0] and moved.objects[2] == scene.objects[2]
    assert moved.objects[1].x == pytest.approx(scene.objects[1].x + 0.1)
    assert scene != moved


def test_object_point_follows_edits():
    scene = _scene("rectangle", rotation=0.4, sx=1.3, sy=0.8)
    u, v = 0.6, -0.3
    x0, y0 = sc.object_point(scene, 0, u, v)
    assert sc.object_coords(scene, 0, x0, y0) == pytest.approx((u, v))
    x1, y1 = sc.object_point(sc.move(scene, 0, 0.05, -0.02), 0, u, v)
    assert (x1 - x0, y1 - y0) == pytest.approx((0.05, -0.02))
    # resizing about the centre scales the offset from the centre
    cx, cy = sc.object_point(scene, 0, 0, 0)
    x2, y2 = sc.object_point(sc.resize(scene, 0, 1.5), 0, u, v)
    assert (x2 - cx, y2 - cy) == pytest.approx((1.5 * (x0 - cx), 1.5 * (y0 - cy)))
    # stretching an unrotated object scales image x and y offsets separately
    flat = _scene("rectangle")
    x3, y3 = sc.object_point(flat, 0, u, v)
    x4, y4 = sc.object_point(sc.stretch(flat, 0, 2.0, 0.5), 0, u, v)
    assert (x4 - 0.4, y4 - 0.45) == pytest.approx((2.0 * (x3 - 0.4), 0.5 * (y3 - 0.45)))


def test_object_point_lands_on_the_rendered_edge():
    scene = _scene("square", rotation=0.0)
    mask = sc.render_masks([sc.stretch(scene, 0, 1.5, 1.0)], S)[0, 0]
    # the square's right edge is at u = 0.86 (box half-width 0.78 + rounding 0.08)
    x, y = sc.object_point(sc.stretch(scene, 0, 1.5, 1.0), 0, 0.86, 0.0)
    col, row = int(x * S), int(y * S)
    assert mask[row, col - 2] > 0.9 and mask[row, col + 2] < 0.1


def test_later_objects_occlude_earlier_ones():
    a = sc.SceneObject("square", "red", sc.PALETTE["red"], 0.5, 0.5, 0.2, shade=0.0, shadow=0.0)
    b = sc.SceneObject("circle", "blue", sc.PALETTE["blue"], 0.5, 0.5, 0.1, shade=0.0, shadow=0.0)
    scene = sc.Scene(sc.Background(), (a, b))
    img = sc.render([scene], S)[0]
    assert img[2, S // 2, S // 2] > 0.7 and img[0, S // 2, S // 2] < 0.3  # blue on top at the centre
    masks = sc.render_masks([scene], S)[0]
    assert masks[0, S // 2, S // 2] < 0.01 and masks[1, S // 2, S // 2] > 0.99


def test_captions_name_every_object_and_the_background():
    rng = np.random.default_rng(0)
    for scene in sc.random_scenes(rng, 40):
        text = sc.caption(scene)
        for obj in scene.objects:
            assert f"{obj.colour} {obj.kind}" in text
        assert text.endswith(f"{scene.background.colour} background")


def test_caption_wording():
    two = sc.Scene(
        sc.Background("stripes", "green", sc.PALETTE["green"], sc.PALETTE["white"]),
        (
            sc.SceneObject("star", "red", sc.PALETTE["red"], 0.5, 0.2, 0.1),
            sc.SceneObject("square", "orange", sc.PALETTE["orange"], 0.5, 0.8, 0.1),
        ),
    )
    assert sc.caption(two) == "a red star and an orange square on a striped green background"
    spatial = sc.Scene(two.background, two.objects, spatial=True)
    assert sc.caption(spatial) == "a red star above an orange square on a striped green background"


def test_bad_input_is_named():
    with pytest.raises(InputError, match="hexagram"):
        sc.SceneObject("hexagram", "red", sc.PALETTE["red"], 0.5, 0.5, 0.1)
    with pytest.raises(InputError, match="index"):
        sc.move(_scene(), 3, 0.1, 0.1)
    with pytest.raises(InputError, match="-1"):
        sc.resize(_scene(), 0, -1)


def test_random_scenes_keep_objects_in_the_frame_and_off_the_background_colour():
    for scene in sc.random_scenes(np.random.default_rng(1), 50):
        assert 1 <= len(scene.objects) <= 4
        for o in scene.objects:
            reach = o.size * max(o.sx, o.sy)
            assert reach - 1e-9 <= o.x <= 1 - reach + 1e-9 and reach - 1e-9 <= o.y <= 1 - reach + 1e-9
            assert o.colour != scene.background.colour
