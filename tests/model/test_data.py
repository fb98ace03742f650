"""TrainingData: batches of captioned images in [-1, 1]."""

from __future__ import annotations

import pytest
import torch

from dragdiff.model.data import TrainingData, to_uint8
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


def test_to_uint8_is_what_a_png_holds():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0 / 255, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 128, 255, 255]  # clamped; 127.5 and 128.0 round to 128
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(u8.float() / 127.5 - 1), u8)  # the pool's inverse reads back exactly


def test_bad_arguments_are_named():
    with pytest.raises(InputError, match="0"):
        TrainingData(size=32).sample(0, torch.Generator())
    with pytest.raises(InputError, match="1.5"):
        TrainingData(emoji_fraction=1.5)


def test_make_data_writes_a_preview_and_samples(tmp_path):
    from PIL import Image

    from dragdiff.cli import main

    preview, out = tmp_path / "grid.png", tmp_path / "samples"
    assert (
        main(["make-data", "--preview", str(preview), "--count", "3", "--out", str(out), "--size", "16"]) == 0
    )
    assert Image.open(preview).size == (8 * 16, 8 * 16)
    lines = preview.with_suffix(".txt").read_text().splitlines()
    assert len(lines) == 64 and lines[0].startswith("0 0\t") and lines[0].endswith("background")
    assert sorted(p.name for p in out.iterdir()) == [
        f"00000{i}.{ext}" for i in range(3) for ext in ("png", "txt")
    ]
    assert Image.open(out / "000002.png").size == (16, 16)


def test_make_data_needs_an_output(capsys):
    from dragdiff.cli import main

    assert main(["make-data", "--count", "3"]) == 2
    assert "--out" in capsys.readouterr().err
