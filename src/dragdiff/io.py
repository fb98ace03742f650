"""Files in and out: images, masks and drag instructions with clear errors; atomic writes; JSON records.

Every reader raises ``InputError`` (a ``ValueError``) with a one-line message naming the file and the problem.
Every writer writes a temporary file beside the target and ``os.replace``s it, so a failed write never leaves
a partial file and an existing file is only ever replaced whole (``atomic_dir`` does the same for a folder).
No torch here.

Masks: white (255) or 1 = editable, black (0) = keep. Grayscale, RGB (a pixel's brightest channel counts),
RGBA/LA (the alpha channel when it varies, else the colour) and 16-bit PNGs are read. So that a mask saved as
JPEG or resampled by an editor still loads, values 0-8 count as black and 247-255 as white; anything in
between is an error naming the values, because guessing a threshold there would silently move the edit region.

Large images: up to ``MAX_PIXELS`` (100 MP) load without Pillow's ``DecompressionBombWarning``; beyond it a
one-line ``InputError``. EXIF orientation is applied on load, so points refer to the upright picture.

What a photo carries beside its pixels (``load_image_file`` -> ``ImageFile``) goes back into the edit's file
(``atomic_save_image(..., like=...)``): the ICC profile, the EXIF data (orientation set to upright, since the
pixels are), the alpha channel (PNG/WebP outputs; the edit works on the picture composited on white and the
input's alpha is put back unchanged: a drag moves colour, not transparency), and for a JPEG written as JPEG
the input's own quantisation tables and chroma subsampling (``--quality`` overrides them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dragdiff.types import InputError, Point

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

BLACK_MAX = 8  # mask values 0..8 read as 0 (tolerates JPEG noise)
WHITE_MIN = 247  # mask values 247..255 read as 1
IMAGE_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
ANIMATION_FORMATS: dict[str, str] = {".gif": "GIF", ".webp": "WEBP"}
MAX_PIXELS = 100_000_000  # largest image (W x H) read: 100 MP, e.g. 12000x8000 (Pillow warns at 89 MP)
DEFAULT_QUALITY = 95  # JPEG/WebP quality of written images (dragdiff edit --quality), unless the input's own
ORIENTATION_TAG = 0x0112  # EXIF Orientation
VERSIONED_PACKAGES: tuple[str, ...] = ("torch", "diffusers", "transformers", "peft", "dragdiff")


# --- reading ------------------------------------------------------------------------------------------


@overload
def _open(path: PathLike, what: str) -> Image.Image: ...
@overload
def _open(path: PathLike, what: str, facts: Literal[True]) -> tuple[Image.Image, ImageFile]: ...


def _open(path: PathLike, what: str, facts: bool = False) -> Any:
    """Open and fully decode an image file; InputError for a missing, unreadable or empty file. With
    ``facts``: (image, its ``ImageFile``)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder, not an image file")
    too_large = f"{what} {p} is too large: dragdiff reads at most {MAX_PIXELS / 1e6:g} MP (io.MAX_PIXELS)"
    try:
        with warnings.catch_warnings():  # our own limit below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise InputError(f"{too_large}; it is {im.width}x{im.height}")
                im.load()  # decode now so a truncated file fails here, not later
                image = ImageOps.exif_transpose(im)  # phone photos: points refer to the upright picture
                found = _file_facts(im, image) if facts else None
    except InputError:
        raise
    except Image.DecompressionBombError:  # beyond twice Pillow's own limit: refused before its size is read
        raise InputError(too_large) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read {what} {p}: {exc}") from None
    if image.width == 0 or image.height == 0:
        raise InputError(f"{what} {p} is empty ({image.width}x{image.height})")
    return (image, found) if facts else image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale -> 8-bit "L" (Pillow's own conversion clips instead of scaling)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), "L")
    return image


@dataclass(frozen=True)
class ImageFile:
    """What an input file carries beside its RGB pixels, to write the edit the way the input was written."""

    format: str | None = None  # Pillow's name: "JPEG", "PNG", "WEBP", ...
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation reset to upright (the pixels read are upright)
    alpha: Image.Image | None = None  # "L", upright; None when the input is opaque
    qtables: dict[int, list[int]] | None = None  # JPEG quantisation tables (``JpegImageFile.quantization``)
    subsampling: int | None = None  # JPEG chroma subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0


def _file_facts(opened: Image.Image, upright: Image.Image) -> ImageFile:
    """The ``ImageFile`` of a decoded file (``opened``) and its EXIF-transposed picture (``upright``)."""
    exif = None
    if "exif" in opened.info or opened.getexif():
        tags = upright.getexif()
        tags.pop(ORIENTATION_TAG, None)
        exif = tags.tobytes() if len(tags) else None
    qtables = subsampling = None
    if opened.format == "JPEG":
        from PIL import JpegImagePlugin

        qtables = {int(k): list(v) for k, v in getattr(opened, "quantization", {}).items()} or None
        sampling = JpegImagePlugin.get_sampling(opened)
        subsampling = sampling if sampling >= 0 else None
    return ImageFile(
        opened.format, opened.info.get("icc_profile") or None, exif, _alpha(upright), qtables, subsampling
    )


def _alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel ("L") of an image that has one and uses it, else None."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa"):
        return None
    alpha = image.getchannel("A")
    return None if alpha.getextrema() == (255, 255) else alpha


def load_image(path: PathLike) -> Image.Image:
    """Read an image as RGB; transparent pixels are composited on white."""
    return load_image_file(path)[0]


def load_image_file(path: PathLike) -> tuple[Image.Image, ImageFile]:
    """``load_image`` and what the file carries beside the pixels (``ImageFile``), from one decode."""
    image, facts = _open(path, "image", facts=True)
    return _to_rgb(image), facts


def _to_rgb(image: Image.Image) -> Image.Image:
    image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _mask_channel(image: Image.Image) -> np.ndarray:
    """The (H, W) uint8 channel that carries a mask: alpha if it varies, else the brightest colour channel."""
    image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    arr = np.asarray(image, dtype=np.uint8)
    if arr.ndim == 2:
        return arr
    if image.mode in ("LA", "RGBA"):
        alpha = arr[..., -1]
        if alpha.min() != alpha.max():
            return alpha
        arr = arr[..., :-1]
    return arr.max(axis=-1)  # (H, W)


def binarize_mask(values: np.ndarray, source: str = "mask") -> np.ndarray:
    """(H, W) 0/1 or 0..255 values -> bool (True = editable), tolerating near-black/near-white noise."""
    v = np.asarray(values)
    if v.dtype == bool:
        return v.copy()
    if v.dtype == np.uint8:  # a histogram instead of sorting every pixel (a 12-MP mask: ~10x faster)
        uniq = np.flatnonzero(np.bincount(v.ravel(), minlength=256)).astype(np.uint8)
    else:
        uniq = np.unique(v)
    if np.isin(uniq, (0, 1)).all():
        return v == 1
    bad = uniq[(uniq > BLACK_MAX) & (uniq < WHITE_MIN)]
    if bad.size:
        shown = ", ".join(str(int(x)) for x in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise InputError(
            f"{source} is not black and white: found values {shown} "
            f"(use 0 or 255, or 0 or 1; {BLACK_MAX + 1}..{WHITE_MIN - 1} are ambiguous)"
        )
    return v >= WHITE_MIN


def load_mask(path: PathLike, size: tuple[int, int]) -> np.ndarray:
    """Read an editable-region mask as an (H, W) bool array; ``size`` is the image's (width, height)."""
    image = _open(path, "mask")
    if image.size != tuple(size):
        raise InputError(
            f"mask {path} is {image.width}x{image.height} but the image is {size[0]}x{size[1]} (W x H)"
        )
    mask = binarize_mask(_mask_channel(image), source=f"mask {path}")
    if not mask.any():
        logger.warning("mask %s marks nothing as editable: the whole image will be held in place", path)
    return mask


def parse_drag(text: str) -> tuple[Point, Point]:
    """Parse ``"X1,Y1:X2,Y2"`` (handle:target in image pixels) into two Points."""
    parts = text.split(":")
    if len(parts) != 2:
        raise InputError(f"a drag must be 'X1,Y1:X2,Y2' (handle:target), got {text!r}")
    try:
        return Point.parse(parts[0]), Point.parse(parts[1])
    except InputError:
        raise InputError(f"a drag must be 'X1,Y1:X2,Y2' with numbers, got {text!r}") from None


# --- writing ------------------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output_path(
    output: PathLike, inputs: Sequence[PathLike], formats: dict[str, str] | None = None
) -> Path:
    """Fail before any work if ``output`` would overwrite an input or cannot be written; returns the Path.

    ``formats`` (e.g. ``IMAGE_FORMATS``, ``ANIMATION_FORMATS``): the suffixes the file may have.
    """
    out = Path(output)
    if formats is not None:
        what = "an animation" if formats is ANIMATION_FORMATS else "an image"
        _format_for(out, formats, what)
    for src in inputs:
        if src is not None and _same_file(out, Path(src)):
            raise InputError(f"output {out} is the input file {src}: choose another output path")
    if out.is_dir():
        raise InputError(f"output {out} is a folder; give a file name")
    folder = out.resolve().parent
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {folder} is not writable")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what a plain open() would give a new file


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    ``atomic_path``'s counterpart for whole folders (e.g. diffusers ``save_pretrained``): files get mode 644,
    folders 755; an existing ``path`` is moved aside first and removed after; on failure nothing changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        for p in (tmp, *tmp.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _format_for(path: Path, formats: dict[str, str], what: str) -> str:
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot save {what} as {path.name!r}: use one of {', '.join(sorted(formats))}")
    return fmt


def atomic_save_image(
    image: Image.Image, path: PathLike, quality: int | None = None, like: ImageFile | None = None
) -> None:
    """Save an image atomically; the format comes from the suffix (.png, .jpg/.jpeg, .webp).

    ``quality``: JPEG/WebP quality 1-100 (default ``DEFAULT_QUALITY``); JPEGs keep full chroma at >= 90.
    ``like``: the input's ``ImageFile``: its ICC profile, EXIF and alpha go into the file, and a JPEG written
    without ``quality`` gets the input JPEG's own quantisation tables and subsampling.
    """
    target = Path(path)
    fmt = _format_for(target, IMAGE_FORMATS, "an image")
    q = DEFAULT_QUALITY if quality is None else quality
    if not 1 <= q <= 100:
        raise InputError(f"image quality must be 1..100, got {q}")
    options: dict[str, Any] = {"quality": q} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "JPEG" and q >= 90:
        options["subsampling"] = 0  # 4:4:4: no chroma blur on the pixels the edit did not touch
    if like is not None:
        image, kept = _like(image, fmt, like, keep_tables=quality is None)
        if "qtables" in kept:  # the input's own tables replace a quality setting
            options.pop("quality", None)
        options.update(kept)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    with atomic_path(target) as tmp:
        image.save(tmp, format=fmt, **options)


def _like(
    image: Image.Image, fmt: str, like: ImageFile, keep_tables: bool
) -> tuple[Image.Image, dict[str, Any]]:
    """``image`` and the save options that write it as ``like`` was written (``atomic_save_image``)."""
    options: dict[str, Any] = {}
    if like.icc_profile:
        options["icc_profile"] = like.icc_profile
    if like.exif:
        options["exif"] = like.exif
    if fmt == "JPEG" and keep_tables and like.qtables:
        options["qtables"] = like.qtables
        options["subsampling"] = like.subsampling if like.subsampling is not None else 0
    if fmt in ("PNG", "WEBP") and like.alpha is not None and like.alpha.size == image.size:
        image = image.convert("RGB")  # a copy: the caller's image is not changed
        image.putalpha(like.alpha)
    return image, options


def _json_default(obj: Any) -> Any:
    """JSON for values dragdiff records hold: numpy/torch values, paths, dataclasses, enums, dates, sets."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays, torch tensors
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    """The JSON text ``atomic_write_json`` writes (indent 2, keys in insertion order, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default) + "\n"


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically; numpy values, Paths and dataclasses are converted."""
    atomic_write_bytes(path, to_json(obj).encode("utf-8"))


def save_animation(frames: Sequence[Image.Image], path: PathLike, fps: float = 8) -> None:
    """Save frames as a looping animation (GIF, or animated WebP by suffix) atomically."""
    if len(frames) == 0:
        raise InputError(f"no frames to save as {path}")
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    target = Path(path)
    fmt = _format_for(target, ANIMATION_FORMATS, "an animation")
    size = frames[0].size
    rgb = [f.convert("RGB") if f.size == size else f.convert("RGB").resize(size) for f in frames]
    duration = max(1, round(1000 / fps))  # ms per frame
    with atomic_path(target) as tmp:
        rgb[0].save(tmp, format=fmt, save_all=True, append_images=rgb[1:], duration=duration, loop=0)


def package_versions() -> dict[str, str]:
    """Versions of the packages an edit depends on, for JSON records ("not installed" when absent)."""
    versions: dict[str, str] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions
