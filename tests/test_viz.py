from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dragdiff.types import DragInstruction, InputError, Point
from dragdiff.viz import HANDLE, TARGET, contact_sheet, draw_instruction, draw_tracking


def _grey(w: int = 128, h: int = 96) -> Image.Image:
    return Image.new("RGB", (w, h), (128, 128, 128))


def _px(im: Image.Image, p: tuple[float, float]) -> tuple[int, int, int]:
    return im.getpixel((round(p[0]), round(p[1])))


def test_instruction_has_red_handles_blue_targets_and_a_white_arrow():
    handles, targets = [(20.0, 30.0), (100.0, 70.0)], [(70.0, 30.0), (100.0, 20.0)]
    image = _grey()
    out = draw_instruction(image, handles, targets)
    assert out.size == image.size and image.getpixel((20, 30)) == (128, 128, 128)  # input untouched
    for h, g in zip(handles, targets, strict=True):
        assert _px(out, h) == HANDLE
        assert _px(out, g) == TARGET
    assert _px(out, (45.0, 30.0)) == (255, 255, 255)  # the arrow between the first pair
    assert _px(out, (100.0, 45.0)) == (255, 255, 255)


def test_instruction_dims_outside_the_mask_and_accepts_an_instruction():
    mask = np.zeros((96, 128), bool)
    mask[:, :64] = True
    instr = DragInstruction((Point(10, 80),), (Point(40, 80),), mask=mask)
    out = draw_instruction(_grey(), instr)
    assert out.getpixel((30, 10)) == (128, 128, 128)  # editable: unchanged
    assert out.getpixel((110, 10))[0] < 80  # outside: dimmed
    assert _px(out, (10, 80)) == HANDLE and _px(out, (40, 80)) == TARGET


def test_instruction_dot_size_scales_with_the_image():
    def red_area(size: int) -> int:
        out = draw_instruction(_grey(size, size), [(size / 2, size / 2)], [(size / 4, size / 4)])
        return int((np.asarray(out) == HANDLE).all(-1).sum())

    assert red_area(512) > 8 * red_area(128)


def test_instruction_bad_inputs():
    with pytest.raises(InputError, match="2 handles and 1 targets"):
        draw_instruction(_grey(), [(1, 1), (2, 2)], [(3, 3)])
    with pytest.raises(InputError, match="mask is 10x10 but the image is 128x96"):
        draw_instruction(_grey(), [(1, 1)], [(3, 3)], mask=np.ones((10, 10), bool))


def test_tracking_frame_marks_current_handles_and_targets():
    out = draw_tracking(_grey(), [(20, 20)], [(100, 20)], [(60, 20)])
    assert _px(out, (60, 20)) == HANDLE
    assert _px(out, (100, 20)) == TARGET
    assert _px(out, (80, 20)) == (255, 255, 255)  # line from current to target
    assert _px(out, (20, 20)) == (128, 128, 128)  # original handle: a hollow ring, centre visible


def test_contact_sheet_fits_cells_and_labels_columns():
    wide, tall = Image.new("RGB", (200, 100), (255, 0, 0)), Image.new("RGB", (50, 100), (0, 0, 255))
    sheet = contact_sheet([[wide, tall], [tall]], labels=["source", "edited"], cell=64)
    assert sheet.size == (128, 28 + 2 * 64)
    assert sheet.getpixel((32, 28 + 32)) == (255, 0, 0)  # wide image centred in its cell
    assert sheet.getpixel((32, 28 + 4)) == (255, 255, 255)  # letterbox above the wide image
    assert sheet.getpixel((64 + 32, 28 + 2))[2] > 200  # tall image fills its cell's height
    label_band = np.asarray(sheet)[:28]
    assert (label_band < 100).any()  # some dark label text
    with pytest.raises(InputError, match="1 labels for 2 columns"):
        contact_sheet([[wide, tall]], labels=["one"])
    assert contact_sheet([[wide]], cell=32).size == (32, 32)
