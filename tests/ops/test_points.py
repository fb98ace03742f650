from __future__ import annotations

import pytest
import torch

from dragdiff.ops import grid_to_image, image_to_grid, work_size
from dragdiff.types import InputError


def test_image_to_grid_scales_rounds_and_swaps_to_row_col():
    pts = torch.tensor([[100.0, 50.0], [511.0, 0.0], [3.0, 381.0]])  # (x, y) in a 512 wide, 384 high image
    grid = image_to_grid(pts, (384, 512), (192, 256))
    assert grid.dtype == torch.float32
    assert grid.tolist() == [[25.0, 50.0], [0.0, 256.0 - 1.0], [190.0, 2.0]]  # 255.5 rounds, then clamps


def test_image_to_grid_clamps_into_grid_and_accepts_ints():
    grid = image_to_grid(torch.tensor([[-10, -10], [1000, 1000]]), (64, 64), (32, 32))
    assert grid.is_floating_point()
    assert grid.tolist() == [[0.0, 0.0], [31.0, 31.0]]


def test_grid_points_round_trip_exactly_and_image_points_within_half_a_grid_pixel():
    grid = torch.tensor([[0.0, 0.0], [10.0, 31.0], [47.0, 5.0]])
    back = image_to_grid(grid_to_image(grid, (48, 32), (96, 64)), (96, 64), (48, 32))
    assert torch.equal(back, grid)
    pts = torch.rand(20, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([63.0, 95.0])
    again = grid_to_image(image_to_grid(pts, (96, 64), (48, 32)), (48, 32), (96, 64))
    assert (again - pts).abs().max() <= 1.0 + 1e-6  # half a grid pixel = 1 image pixel here


def test_image_to_grid_does_not_mutate_input():
    pts = torch.tensor([[10.4, 20.6]])
    before = pts.clone()
    image_to_grid(pts, (64, 64), (32, 32))
    grid_to_image(pts, (32, 32), (64, 64))
    assert torch.equal(pts, before)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), (512, 512)),  # square
        ((800, 600), (512, 384)),  # wide, 4:3
        ((600, 800), (384, 512)),  # tall
        ((500, 333), (512, 344)),  # 333*512/500 = 341.0 -> nearest multiple of 8 is 344
        ((1000, 10), (512, 8)),  # very wide: the short side never drops below one multiple
        ((64, 48), (512, 384)),  # small images are scaled up
    ],
)
def test_work_size(size, expected):
    assert work_size(*size, native=512, multiple=8) == expected


def test_work_size_other_multiple_and_aspect():
    w, h = work_size(1920, 1080, native=128, multiple=16)
    assert (w, h) == (128, 80)  # 1080*128/1920 = 72 lies halfway between 64 and 80: halves round up


def test_work_size_rejects_empty_image():
    with pytest.raises(InputError, match="0x10"):
        work_size(0, 10, native=512, multiple=8)
