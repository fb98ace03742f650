"""Emoji packs and composites: names, the pack file, pasting, and a real (small) Noto pack when apt works."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dragdiff.model import emoji
from dragdiff.model.data import TrainingData
from dragdiff.types import InputError


def _two_tone_sprite(side: int = 16) -> np.ndarray:
    """Opaque sprite: left half red, right half blue, (side, side, 4) uint8."""
    sprite = np.zeros((side, side, 4), np.uint8)
    sprite[:, : side // 2] = (255, 0, 0, 255)
    sprite[:, side // 2 :] = (0, 0, 255, 255)
    return sprite


@pytest.fixture
def pack_path(tmp_path: Path) -> Path:
    disc = np.zeros((16, 16, 4), np.uint8)
    yy, xx = np.mgrid[:16, :16]
    disc[(yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 49] = (0, 200, 0, 255)
    images = np.stack([_two_tone_sprite(), disc])
    return emoji.write_pack(
        tmp_path / "pack.npz", images, ["two tone", "green disc"], ["test"] * 2, ["CC0"] * 2
    )


def test_emoji_names_read_like_captions():
    assert emoji.emoji_name(0x1F60E) == "smiling face with sunglasses"
    assert emoji.emoji_name(0x2764) == "red heart"  # Unicode says HEAVY BLACK HEART; the picture is red
    assert emoji.emoji_name(0x1F5A4) == "black heart"  # this one is black
    assert emoji.emoji_name(0x2B06) == "upwards arrow"
    assert emoji.emoji_name(ord("7")) is None  # keycap base, not an emoji on its own
    assert emoji.emoji_phrase("alarm clock") == "an alarm clock emoji"
    assert emoji.emoji_phrase("european castle") == "a european castle emoji"


def test_pack_round_trip(pack_path: Path):
    pack = emoji.EmojiPack.load(pack_path)
    assert len(pack) == 2 and pack.names == ["two tone", "green disc"]
    assert pack.images.shape == (2, 16, 16, 4) and pack.images.dtype == np.uint8
    assert "2 emoji" in emoji.pack_summary(pack)


def test_bad_pack_is_named(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        emoji.EmojiPack.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros((1, 4, 4, 4), np.uint8))
    with pytest.raises(InputError, match="names"):
        emoji.EmojiPack.load(tmp_path / "other.npz")


def test_paste_places_the_sprite_exactly():
    size = 32
    background = torch.full((1, 3, size, size), 0.5)
    sprite = torch.from_numpy(_two_tone_sprite()).permute(2, 0, 1)[None]  # (1, 4, 16, 16)
    out = emoji.paste(background, sprite, np.array([[0.5, 0.5]]), np.array([0.25]), np.array([0.0]))[0]
    # the sprite covers x, y in [0.25, 0.75] (pixels 8..23): red left of the centre, blue right of it
    assert torch.allclose(out[:, 16, 10], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(out[:, 16, 21], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert torch.allclose(out[:, 2, 2], torch.tensor([0.5, 0.5, 0.5]))  # outside: untouched
    assert torch.allclose(out[:, 16, 4], torch.tensor([0.5, 0.5, 0.5]))
    # rotated by a half turn, the colours swap sides
    flipped = emoji.paste(background, sprite, np.array([[0.5, 0.5]]), np.array([0.25]), np.array([np.pi]))[0]
    assert torch.allclose(flipped[:, 16, 10], torch.tensor([0.0, 0.0, 1.0]), atol=1e-4)


def test_composites_and_captions(pack_path: Path):
    pack = emoji.EmojiPack.load(pack_path)
    images, captions = pack.composite(np.random.default_rng(0), 6, 32)
    assert images.shape == (6, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    for text in captions:
        assert "two tone emoji" in text or "green disc emoji" in text
        assert text.endswith("background")


def test_training_data_mixes_emoji(pack_path: Path):
    source = TrainingData(size=32, emoji_pack=pack_path, emoji_fraction=0.5)
    images, captions = source.sample(16, torch.Generator().manual_seed(0))
    assert images.shape == (16, 3, 32, 32) and -1 <= images.min() and images.max() <= 1
    with_emoji = sum("emoji" in c for c in captions)
    assert 0 < with_emoji < 16
    again, captions_again = source.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(images, again) and captions == captions_again


def _fake_deb(path: Path, member: str, payload: bytes) -> None:
    """A minimal .deb: an ar archive holding data.tar.xz with one file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()

    def header(name: str, size: int) -> bytes:
        return f"{name:<16}{0:<12}{0:<6}{0:<6}{644:<8}{size:<10}`\n".encode()

    body = b"2.0\n"
    with path.open("wb") as f:
        f.write(b"!<arch>\n" + header("debian-binary", len(body)) + body)
        f.write(header("data.tar.xz", len(data)) + data + b"\n" * (len(data) % 2))


def test_font_is_extracted_from_a_debian_package(tmp_path: Path):
    deb = tmp_path / "pkg.deb"
    _fake_deb(deb, "./usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", b"font bytes")
    out = emoji._extract_deb_member(deb, "NotoColorEmoji.ttf", tmp_path)
    assert out.read_bytes() == b"font bytes"
    with pytest.raises(emoji.EmojiSourceError, match="no file ending"):
        emoji._extract_deb_member(deb, "Other.ttf", tmp_path)


@pytest.fixture(scope="module")
def noto_font(tmp_path_factory) -> Path:
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not available")
    try:
        return emoji.download_noto_font(tmp_path_factory.mktemp("noto"))
    except emoji.EmojiSourceError as exc:
        pytest.skip(f"Noto Color Emoji not downloadable here: {exc}")


def test_real_noto_pack(noto_font: Path, tmp_path: Path):
    out = emoji.build_emoji_pack(tmp_path / "pack.npz", size=32, font=noto_font, limit=40)
    pack = emoji.EmojiPack.load(out)
    assert len(pack) == 40 and pack.images.shape == (40, 32, 32, 4)
    assert "watch" in pack.names and all(n == n.lower() for n in pack.names)
    assert (pack.images[..., 3] > 0).mean() > 0.2  # real pictures, not empty bitmaps
    assert set(pack.licences) == {emoji.NOTO_LICENCE}


def test_fluent_names_drop_skin_tone_suffixes():
    stems = {"man-dancing-default", "man-dancing-light", "man-dancing-medium-dark", "new-moon-face"}
    assert emoji.fluent_name("man-dancing-default", stems) == "man dancing"
    assert emoji.fluent_name("man-dancing-light", stems) == "man dancing"
    assert emoji.fluent_name("man-dancing-medium-dark", stems) is None  # only FLUENT_TONES are kept
    assert emoji.fluent_name("new-moon-face", stems) == "new moon face"


def test_fluent_svgs_render_into_a_pack(tmp_path: Path, noto_font: Path):
    pytest.importorskip("cairosvg")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "red-square.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32">'
        '<rect x="8" y="8" width="16" height="16" fill="#ff0000"/></svg>'
    )
    out = emoji.build_emoji_pack(tmp_path / "pack.npz", size=16, font=noto_font, fluent_dir=flat, limit=3)
    pack = emoji.EmojiPack.load(out)
    assert pack.names[-1] == "red square" and pack.sources[-1] == "fluentui-emoji"
    assert pack.licences[-1] == emoji.FLUENT_LICENCE
    sprite = pack.images[-1]
    assert tuple(sprite[8, 8]) == (255, 0, 0, 255) and sprite[1, 1, 3] == 0  # red inside, clear outside
