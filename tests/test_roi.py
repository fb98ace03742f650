"""The region of interest: box choice and checks, pasting, and on an 8-MP image untouched pixels exact."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import build_tiny_pipeline
from dragdiff.config import METHOD_NAMES, EditConfig
from dragdiff.editor import DragEditor
from dragdiff.ops import work_size
from dragdiff.roi import choose_roi, crop_instruction, paste_roi, seam_weight
from dragdiff.types import DragInstruction, InputError, Point

SHORT = {  # as tests/test_methods.py: every method cut to seconds on the tiny pipeline
    "lora.steps": 2,
    "lora.batch_size": 1,
    "lora.rank": 4,
    "inversion.num_steps": 10,
    "drag.max_iterations": 2,
    "warp.fill_steps": 4,
}
BIG = (3500, 2400)  # 8.4 MP


def _texture(width: int, height: int) -> Image.Image:
    """A procedural texture with detail at every scale (any resampling would change it)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 127 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = 127 + 100 * np.sin((x + y) / 23.0)
    b = (x.astype(np.int64) * 7 + y.astype(np.int64) * 13) % 256
    return Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> DragEditor:
    return DragEditor(build_tiny_pipeline(), lora_cache_dir=tmp_path_factory.mktemp("lora-cache"))


@pytest.fixture(scope="module")
def big() -> Image.Image:
    return _texture(*BIG)


def _corner_drag(mask: bool) -> DragInstruction:
    m = None
    if mask:
        m = np.zeros(BIG[::-1], bool)  # (H, W)
        m[2200:2360, 3250:3460] = True
    return DragInstruction.from_pairs([((3300, 2280), (3360, 2290))], mask=m)


# --- choosing the box -------------------------------------------------------------------------------------


def test_auto_box_holds_the_drag_with_a_margin_and_at_least_the_native_size() -> None:
    ins = DragInstruction.from_pairs([((1000, 800), (1100, 800))])
    x0, y0, x1, y1 = choose_roi((4000, 2667), ins, native=512, multiple=8)
    assert x0 <= 1000 - 25 and x1 >= 1100 + 25 and y0 <= 800 - 25 and y1 >= 800 + 25  # 0.25 x drag
    assert x1 - x0 >= 512 and y1 - y0 >= 512


def test_auto_box_is_clipped_to_the_image_and_grows_inwards_at_a_corner() -> None:
    ins = DragInstruction.from_pairs([((5, 5), (20, 10))])
    box = choose_roi((4000, 2667), ins, native=512, multiple=8)
    assert box[:2] == (0, 0) and box[2] >= 512 and box[3] >= 512


def test_auto_box_of_a_small_image_is_the_whole_image() -> None:
    ins = DragInstruction.from_pairs([((21, 22), (31, 22))])
    assert choose_roi((60, 44), ins, native=64, multiple=32) == (0, 0, 60, 44)


def test_auto_box_covers_the_mask() -> None:
    mask = np.zeros((2000, 3000), bool)
    mask[100:900, 200:1800] = True
    ins = DragInstruction.from_pairs([((500, 500), (520, 500))], mask=mask)
    x0, y0, x1, y1 = choose_roi((3000, 2000), ins, native=128, multiple=32)
    assert x0 <= 200 and y0 <= 100 and x1 >= 1800 and y1 >= 900


def test_auto_box_has_the_work_size_aspect() -> None:
    ins = DragInstruction.from_pairs([((1000, 1000), (1400, 1000))])  # a wide drag
    x0, y0, x1, y1 = choose_roi((4000, 3000), ins, native=128, multiple=32)
    work_w, work_h = work_size(x1 - x0, y1 - y0, 128, 32)
    assert abs((x1 - x0) / (y1 - y0) - work_w / work_h) < 0.01  # resizing the crop does not stretch it


def test_full_and_explicit_boxes() -> None:
    ins = DragInstruction.from_pairs([((50, 50), (60, 55))])
    assert choose_roi((200, 100), ins, 64, 8, "full") == (0, 0, 200, 100)
    assert choose_roi((200, 100), ins, 64, 8, "10,20,110,90") == (10, 20, 110, 90)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,0,300,50", "outside the 200x100 image"),
        ("40,40,40,80", "empty or outside"),
        ("55,0,120,100", r"does not contain handle 1 at \(50, 50\)"),
        ("0,0,58,100", r"does not contain target 1 at \(60, 55\)"),
        ("1,2,3", "'X0,Y0,X1,Y1'"),
        ("big", "'big'"),
    ],
)
def test_a_bad_explicit_box_is_a_one_line_error_naming_it(spec: str, message: str) -> None:
    ins = DragInstruction.from_pairs([((50, 50), (60, 55))])
    with pytest.raises(InputError, match=message) as info:
        choose_roi((200, 100), ins, 64, 8, spec)
    assert "\n" not in str(info.value)


def test_crop_instruction_shifts_points_and_crops_the_mask() -> None:
    mask = np.zeros((100, 200), bool)
    mask[40:70, 45:80] = True
    ins = DragInstruction.from_pairs([((50, 50), (60, 55))], mask=mask, prompt="p")
    local = crop_instruction(ins, (10, 20, 110, 90))
    assert local.handles == (Point(40, 30),) and local.targets == (Point(50, 35),) and local.prompt == "p"
    assert local.mask is not None and local.mask.shape == (70, 100)
    assert np.array_equal(local.mask, mask[20:90, 10:110])
    assert ins.handles == (Point(50, 50),)  # the input is not mutated


def test_paste_keeps_every_pixel_outside_the_box_and_feathers_the_seam() -> None:
    source = _texture(120, 80)
    box = (20, 10, 100, 70)
    edited = paste_roi(source, Image.new("RGB", (80, 60), (255, 0, 0)), box)
    src, out = np.asarray(source), np.asarray(edited)
    outside = np.ones((80, 120), bool)
    outside[10:70, 20:100] = False
    assert np.array_equal(src[outside], out[outside])
    assert (out[40, 60] == (255, 0, 0)).all()  # the middle is the edit
    weight = seam_weight(box, (120, 80))
    assert 0 < weight[0, 40] < weight[2, 40] < 1 and weight[30, 40] == 1
    assert seam_weight((0, 0, 50, 80), (120, 80))[40, 0] == 1  # no seam along the image's own edge


# --- on a large image: untouched means identical ------------------------------------------------------------


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_large_image_every_pixel_outside_the_mask_is_the_input(
    editor: DragEditor, big: Image.Image, method: str
) -> None:
    ins = _corner_drag(mask=True)
    result = editor.edit(big, ins, EditConfig(method=method).override(**SHORT))
    src, out = np.asarray(big), np.asarray(result.image)
    assert result.image.size == BIG and np.array_equal(np.asarray(result.source), src)
    assert ins.mask is not None and np.array_equal(src[~ins.mask], out[~ins.mask])
    assert not np.array_equal(src[ins.mask], out[ins.mask])  # the edit did something
    x0, y0, x1, y1 = result.record["roi"]
    assert x0 <= 3250 and y0 <= 2200 and x1 >= 3460 and y1 >= 2360  # the mask and a margin
    assert (x1 - x0) * (y1 - y0) < 0.02 * BIG[0] * BIG[1]  # a corner of the picture, not all of it


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_large_image_without_a_mask_every_pixel_outside_the_box_is_the_input(
    editor: DragEditor, big: Image.Image, method: str
) -> None:
    ins = _corner_drag(mask=False)
    run = editor.iter_edit(big, ins, EditConfig(method=method).override(**SHORT))
    events = list(run)
    result = run.result
    assert result is not None
    x0, y0, x1, y1 = result.record["roi"]
    src, out = np.asarray(big), np.asarray(result.image)
    outside = np.ones(src.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(src[outside], out[outside])
    assert x0 <= 3300 - 15 and y0 <= 2280 - 15  # the box holds the drag and its margin
    for p in (*result.final_handles, *events[-1].handles):  # back in the image's coordinates
        assert x0 <= p.x < x1 and y0 <= p.y < y1


def test_roi_full_edits_the_whole_image(editor: DragEditor) -> None:
    image = _texture(300, 200)
    ins = DragInstruction.from_pairs([((30, 30), (40, 35))])
    result = editor.edit(image, ins, EditConfig().override(**SHORT), roi="full")
    assert result.record["roi"] == [0, 0, 300, 200]
    auto = editor.edit(image, ins, EditConfig().override(**SHORT))
    assert auto.record["roi"][2] < 300  # auto crops it


def test_a_bad_roi_fails_before_any_work(editor: DragEditor) -> None:
    ins = DragInstruction.from_pairs([((30, 30), (40, 35))])
    with pytest.raises(InputError, match="does not contain handle 1"):
        editor.iter_edit(_texture(300, 200), ins, EditConfig(), roi="100,100,200,200")


def test_auto_roi_keeps_the_resolution_a_full_edit_loses(editor: DragEditor) -> None:
    """The reason for ROIs: a whole-image edit goes through the model's 64 px and blurs every pixel."""
    image = _texture(640, 480)
    ins = DragInstruction.from_pairs([((560, 400), (580, 410))])
    config = EditConfig(method="dragdiffusion").override(**SHORT)
    src = np.asarray(image, np.float32)
    errors = {}
    for roi in ("auto", "full"):
        out = np.asarray(editor.edit(image, ins, config, roi=roi).image, np.float32)
        errors[roi] = np.abs(out - src).mean()
    assert errors["auto"] < 0.1 * errors["full"]
