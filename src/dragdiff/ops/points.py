"""Coordinates: image pixels (x, y) <-> supervision-grid points (row, col), and the size a model runs at.

Paper notation (SPEC §4): the user's image is H x W, the supervision grid (the upsampled feature map) is
H' x W'. A handle h_i = (x, y) in image pixels sits at grid point (row, col) = (round(y·H'/H), round(x·W'/W)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dragdiff.types import InputError


def _scale(points: Tensor) -> Tensor:
    return points if points.is_floating_point() else points.to(torch.get_default_dtype())


def image_to_grid(points_xy: Tensor, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> Tensor:
    """Image pixels (x, y) -> grid (row, col) = (round(y·H'/H), round(x·W'/W)), clamped into the grid."""
    (h, w), (gh, gw) = image_hw, grid_hw
    pts = _scale(points_xy)  # (N, 2) as (x, y)
    row = torch.round(pts[:, 1] * (gh / h)).clamp(0, gh - 1)
    col = torch.round(pts[:, 0] * (gw / w)).clamp(0, gw - 1)
    return torch.stack([row, col], dim=-1)  # (N, 2) as (row, col)


def grid_to_image(points_rc: Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """Grid (row, col) -> image pixels (x, y) = (col·W/W', row·H/H'); the inverse of ``image_to_grid``."""
    (gh, gw), (h, w) = grid_hw, image_hw
    pts = _scale(points_rc)  # (N, 2) as (row, col)
    return torch.stack([pts[:, 1] * (w / gw), pts[:, 0] * (h / gh)], dim=-1)  # (N, 2) as (x, y)


def work_size(width: int, height: int, native: int, multiple: int) -> tuple[int, int]:
    """(W, H) to run a model at: long side ``native``, aspect kept, each side a multiple of ``multiple``."""
    if width < 1 or height < 1:
        raise InputError(f"image size must be at least 1x1, got {width}x{height}")
    if native < 1 or multiple < 1:
        raise InputError(f"native size and multiple must be >= 1, got native={native}, multiple={multiple}")
    scale = native / max(width, height)

    def snap(side: float) -> int:
        return max(multiple, math.floor(side / multiple + 0.5) * multiple)  # halves round up

    return snap(width * scale), snap(height * scale)
