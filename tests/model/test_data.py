"""TrainingData: batches of captioned images in [-1, 1]."""

from __future__ import annotations

import pytest
import torch

from dragdiff.model.data import TrainingData
from dragdiff.types import InputError


def test_sample_shapes_range_and_captions():
    source = TrainingData(size=32)
    images, captions = source.sample(5, torch.Generator().manual_seed(0), "cpu")
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert len(captions) == 5 and all(c.endswith("background") for c in captions)


def test_sample_follows_the_generator():
    source = TrainingData(size=32)
    a, ca = source.sample(4, torch.Generator().manual_seed(1))
    b, cb = source.sample(4, torch.Generator().manual_seed(1))
    c, cc = source.sample(4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and ca == cb
    assert ca != cc


def test_bad_arguments_are_named():
    with pytest.raises(InputError, match="0"):
        TrainingData(size=32).sample(0, torch.Generator())
    with pytest.raises(InputError, match="1.5"):
        TrainingData(emoji_fraction=1.5)
