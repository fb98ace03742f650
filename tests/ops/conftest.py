from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _coord_map(h: int, w: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (1, 2, h, w) feature map equal to its own coordinate grid: channel 0 = row, channel 1 = col."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([rows, cols])[None]


@pytest.fixture
def coord_map() -> Callable[..., torch.Tensor]:
    return _coord_map


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
