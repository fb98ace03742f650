from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragdiff import io
from dragdiff.types import InputError, Point


def _gradient(w: int = 48, h: int = 32) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None]
    arr = np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90)], -1
    )
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _square_mask(w: int = 48, h: int = 32) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[8:20, 10:30] = True
    return m


# --- load_image ---------------------------------------------------------------------------------------------


def test_load_image_reads_rgb_and_composites_alpha_on_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :6, 3] = 255  # left half opaque red-ish, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    im = io.load_image(tmp_path / "a.png")
    assert im.mode == "RGB" and im.size == (12, 10)
    assert im.getpixel((0, 0)) == (200, 0, 0)
    assert im.getpixel((11, 9)) == (255, 255, 255)


def test_load_image_converts_grayscale_palette_and_16_bit(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    assert io.load_image(tmp_path / "g.png").getpixel((1, 1)) == (77, 77, 77)
    _gradient().convert("P").save(tmp_path / "p.gif")
    assert io.load_image(tmp_path / "p.gif").mode == "RGB"
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert io.load_image(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)


def test_load_image_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match=r"image not found: .*nope\.png"):
        io.load_image(tmp_path / "nope.png")


def test_load_image_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(InputError, match=r"cannot read image .*junk\.png: "):
        io.load_image(tmp_path / "junk.png")
    _gradient().save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cannot read image .*cut\.png"):
        io.load_image(tmp_path / "cut.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png"):
        io.load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="folder"):
        io.load_image(tmp_path)


# --- load_mask ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["L255", "L01", "1bit", "RGB", "RGBA_alpha", "RGBA_colour", "jpeg"])
def test_load_mask_formats(tmp_path, kind):
    m = _square_mask()
    u8 = m.astype(np.uint8) * 255
    path = tmp_path / ("m.jpg" if kind == "jpeg" else "m.png")
    if kind == "L255":
        Image.fromarray(u8, "L").save(path)
    elif kind == "L01":
        Image.fromarray(m.astype(np.uint8), "L").save(path)
    elif kind == "1bit":
        Image.fromarray(m).save(path)
    elif kind == "RGB":
        Image.fromarray(np.stack([u8, u8, u8], -1), "RGB").save(path)
    elif kind == "RGBA_alpha":  # a white stroke painted on a transparent layer
        Image.fromarray(np.dstack([np.full_like(u8, 255)] * 3 + [u8]), "RGBA").save(path)
    elif kind == "RGBA_colour":  # opaque black/white
        Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 255)]), "RGBA").save(path)
    else:  # JPEG noise around 0 and 255 is tolerated
        noisy = np.clip(u8.astype(int) + np.where(m, -5, 5), 0, 255).astype(np.uint8)
        Image.fromarray(noisy, "L").save(path, quality=100)
    got = io.load_mask(path, (48, 32))
    assert got.dtype == bool and got.shape == (32, 48)
    assert np.array_equal(got, m)


def test_load_mask_size_mismatch_names_both_sizes(tmp_path):
    Image.fromarray(_square_mask().astype(np.uint8) * 255).save(tmp_path / "m.png")
    with pytest.raises(InputError, match=r"48x32 but the image is 64x32"):
        io.load_mask(tmp_path / "m.png", (64, 32))


def test_load_mask_grey_values_are_named(tmp_path):
    arr = _square_mask().astype(np.uint8) * 255
    arr[0, :3] = [100, 128, 200]
    Image.fromarray(arr).save(tmp_path / "m.png")
    with pytest.raises(InputError, match=r"not black and white: found values 100, 128, 200"):
        io.load_mask(tmp_path / "m.png", (48, 32))


def test_load_mask_missing_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="mask not found"):
        io.load_mask(tmp_path / "none.png", (4, 4))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(InputError, match="cannot read mask"):
        io.load_mask(tmp_path / "bad.png", (4, 4))


# --- parse_drag ---------------------------------------------------------------------------------------------


def test_parse_drag():
    assert io.parse_drag("10,20:30.5,40") == (Point(10, 20), Point(30.5, 40))
    assert io.parse_drag(" 1, 2 : 3 ,4 ") == (Point(1, 2), Point(3, 4))


@pytest.mark.parametrize("text", ["10,20", "10,20:30", "a,b:c,d", "1,2:3,4:5,6", ""])
def test_parse_drag_rejects_malformed_text_naming_it(text):
    with pytest.raises(InputError, match=re.escape(repr(text))):
        io.parse_drag(text)


# --- output paths and atomic writes -------------------------------------------------------------------------


def test_check_output_path_refuses_inputs_symlinks_and_missing_folders(tmp_path):
    src = tmp_path / "in.png"
    _gradient().save(src)
    link = tmp_path / "link.png"
    link.symlink_to(src)
    with pytest.raises(InputError, match="is the input file"):
        io.check_output_path(src, [src])
    with pytest.raises(InputError, match="is the input file"):
        io.check_output_path(link, [tmp_path / "other.png", src])
    with pytest.raises(InputError, match="does not exist"):
        io.check_output_path(tmp_path / "no" / "out.png", [src])
    with pytest.raises(InputError, match="is a folder"):
        io.check_output_path(tmp_path, [src])
    assert io.check_output_path(tmp_path / "out.png", [src]) == tmp_path / "out.png"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_path_refuses_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            io.check_output_path(ro / "out.png", [])
    finally:
        ro.chmod(0o700)


def test_atomic_write_replaces_whole_and_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    io.atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_dir_replaces_a_folder_whole_and_keeps_it_on_failure(tmp_path):
    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("first")
    assert (target / "sub" / "a.txt").read_text() == "first"
    assert (target / "sub" / "a.txt").stat().st_mode & 0o777 == 0o644
    with io.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.txt"]  # replaced whole, not merged
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary or .old folder left


def test_atomic_save_image_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.png"
    io.atomic_save_image(_gradient(), target)
    before = target.read_bytes()
    with pytest.raises(OSError, match="CMYK"):  # Pillow cannot write CMYK as PNG
        io.atomic_save_image(Image.new("CMYK", (4, 4)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".jpeg", ".webp"])
def test_atomic_save_image_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    io.atomic_save_image(_gradient().convert("RGBA"), path)
    back = io.load_image(path)
    assert back.size == (48, 32)
    diff = np.abs(np.asarray(back, int) - np.asarray(_gradient(), int)).mean()
    assert diff < (0.01 if suffix == ".png" else 4)
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # normal permissions, not the temp file's


def test_atomic_save_image_rejects_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match=r"'out\.bmp'.*\.png"):
        io.atomic_save_image(_gradient(), tmp_path / "out.bmp")


def test_atomic_write_json_handles_numpy_paths_and_dataclasses(tmp_path):
    @dataclass
    class Run:
        name: str
        where: Path

    obj = {
        "z": 1,
        "a": np.float32(0.5),
        "arr": np.arange(3),
        "run": Run("x", Path("/tmp/y")),
        "p": Point(1, 2),
    }
    io.atomic_write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert text.startswith('{\n  "z": 1')  # indent 2, insertion order kept
    assert json.loads(text) == {
        "z": 1,
        "a": 0.5,
        "arr": [0, 1, 2],
        "run": {"name": "x", "where": "/tmp/y"},
        "p": {"x": 1, "y": 2},
    }
    with pytest.raises(TypeError, match="object"):
        io.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_save_animation_writes_a_looping_gif(tmp_path):
    frames = [Image.new("RGB", (16, 12), (40 * i, 0, 0)) for i in range(4)]
    io.save_animation(frames, tmp_path / "a.gif", fps=10)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.info["loop"] == 0 and gif.info["duration"] == 100
    with pytest.raises(InputError, match="no frames"):
        io.save_animation([], tmp_path / "b.gif")
    with pytest.raises(InputError, match=r"\.gif"):
        io.save_animation(frames, tmp_path / "b.png")


def test_package_versions():
    v = io.package_versions()
    assert set(v) == {"torch", "diffusers", "transformers", "peft", "dragdiff", "python"}
    assert v["dragdiff"] == "0.1.0" and v["python"].count(".") == 2


def test_large_images_load_without_a_warning_and_too_large_ones_fail_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (60, 44), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # Pillow would warn (and above 4000 px, refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.load_image(path).size == (60, 44)  # 2640 px: below dragdiff's limit, no warning
    monkeypatch.setattr(io, "MAX_PIXELS", 2000)
    with pytest.raises(InputError, match=r"too large: dragdiff reads at most 0.002 MP.*is 60x44") as info:
        io.load_image(path)
    assert "\n" not in str(info.value)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (100, 100)).save(huge)  # beyond twice Pillow's limit: Pillow refuses to open it
    with pytest.raises(InputError, match="is too large"):
        io.load_image(huge)


def test_exif_orientation_is_applied_and_jpeg_quality_is_kept(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    Image.new("RGB", (60, 40), (200, 30, 30)).save(path, exif=exif)
    assert io.load_image(path).size == (40, 60)
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    io.atomic_save_image(noisy, tmp_path / "q95.jpg")
    io.atomic_save_image(noisy, tmp_path / "q50.jpg", quality=50)
    assert (tmp_path / "q95.jpg").stat().st_size > 1.5 * (tmp_path / "q50.jpg").stat().st_size
    with pytest.raises(InputError, match="quality must be 1..100, got 0"):
        io.atomic_save_image(noisy, tmp_path / "q0.jpg", quality=0)


# --- what a photo carries beside its pixels ---------------------------------------------------------------


def _photo(w: int = 64, h: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_a_jpeg_is_written_with_the_inputs_own_quantisation_and_subsampling(tmp_path):
    src = tmp_path / "phone.jpg"
    _photo().save(src, quality=72, subsampling=2)  # 4:2:0, as phones write
    image, facts = io.load_image_file(src)
    io.atomic_save_image(image, tmp_path / "out.jpg", like=facts)
    with Image.open(src) as a, Image.open(tmp_path / "out.jpg") as b:
        from PIL import JpegImagePlugin

        assert b.quantization == a.quantization
        assert JpegImagePlugin.get_sampling(b) == JpegImagePlugin.get_sampling(a) == 2
    io.atomic_save_image(image, tmp_path / "q95.jpg", quality=95, like=facts)  # --quality wins
    with Image.open(src) as a, Image.open(tmp_path / "q95.jpg") as b:
        assert b.quantization != a.quantization


def test_icc_profile_exif_and_alpha_are_kept(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the pixels read are upright, so the output says "upright"
    exif[0x010F] = "PhoneMaker"  # Make
    src = tmp_path / "phone.jpg"
    _photo(60, 40).save(src, icc_profile=icc, exif=exif)
    image, facts = io.load_image_file(src)
    assert image.size == (40, 60)
    io.atomic_save_image(image, tmp_path / "out.jpg", like=facts)
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.info["icc_profile"] == icc
        tags = out.getexif()
        assert tags[0x010F] == "PhoneMaker" and tags.get(0x0112, 1) == 1
        assert out.size == (40, 60)
    rgba = _photo().convert("RGBA")
    alpha = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)))
    rgba.putalpha(alpha)
    rgba.save(tmp_path / "cut.png")
    image, facts = io.load_image_file(tmp_path / "cut.png")
    assert image.mode == "RGB"  # the edit sees the picture on white
    io.atomic_save_image(image, tmp_path / "cut-out.png", like=facts)
    with Image.open(tmp_path / "cut-out.png") as out:
        assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], np.asarray(alpha))
    assert io.load_image_file(tmp_path / "out.jpg")[1].alpha is None
