"""Colour-emoji composites: emoji bitmaps pasted over procedural backgrounds, captioned from their names.

Sources (permissive only): Noto Color Emoji from Debian's ``fonts-noto-color-emoji`` package (images
Apache-2.0, font file SIL OFL 1.1), fetched with ``apt-get download`` (no install), PNG bitmaps read from the
font's CBDT table with fontTools, one per single-codepoint emoji, named from ``unicodedata``; optionally the
flat Fluent emoji of the npm package ``fluentui-emoji`` (MIT), fetched with ``npm pack``, rendered with
cairosvg, named from their file names. ``build_emoji_pack`` stores them as a compact ``.npz``: ``images``
uint8 RGBA (K, S, S, 4), ``names``, ``sources``, ``licences`` (K,).

``EmojiPack.composite`` pastes 1–2 emoji per image at random scale, position and rotation (an affine
``F.grid_sample`` of premultiplied RGBA), batched on the device, over ``dragdiff.model.scenes`` backgrounds.
"""

from __future__ import annotations

import io
import logging
import lzma
import shutil
import subprocess
import tarfile
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from dragdiff.io import atomic_path
from dragdiff.model import scenes
from dragdiff.types import InputError

log = logging.getLogger(__name__)

DEFAULT_PACK = Path(".carry/emoji_pack.npz")
NOTO_PACKAGE = "fonts-noto-color-emoji"
NOTO_FONT = "NotoColorEmoji.ttf"
NOTO_LICENCE = "Apache-2.0 (images); font SIL OFL 1.1"
FLUENT_PACKAGE = "fluentui-emoji"
FLUENT_LICENCE = "MIT"
FLUENT_TONES = ("default", "light", "dark")  # skin tones kept, of the six each person comes in
_ALL_TONES = ("medium-light", "medium-dark", "default", "light", "medium", "dark")  # longest suffixes first

# code points with a glyph that are not emoji on their own (keycap bases, modifiers, letters for flags)
_SKIP_PREFIXES = (
    "DIGIT ",
    "NUMBER SIGN",
    "ASTERISK",
    "COMBINING ",
    "REGIONAL INDICATOR",
    "EMOJI MODIFIER",
    "EMOJI COMPONENT",
    "ZERO WIDTH",
    "VARIATION SELECTOR",
    "TAG ",
    "CANCEL TAG",
    "COPYRIGHT SIGN",
    "REGISTERED SIGN",
    "TRADE MARK SIGN",
)
# names in a script the captions cannot spell out
_SKIP_WORDS = ("IDEOGRAPH", "KATAKANA", "HIRAGANA")
# names whose colour word is wrong for the picture ("BLACK" in Unicode often means "filled")
_RENAME = {
    "HEAVY BLACK HEART": "red heart",
    "BLACK HEART SUIT": "heart suit",
    "BLACK SUN WITH RAYS": "sun",
    "WHITE MEDIUM STAR": "star",
    "WHITE HEAVY CHECK MARK": "check mark button",
    "BLACK QUESTION MARK ORNAMENT": "red question mark",
    "WHITE QUESTION MARK ORNAMENT": "white question mark",
    "WHITE EXCLAMATION MARK ORNAMENT": "white exclamation mark",
}
# words kept literally: these pictures really are black or white
_TRUE_COLOUR = ("SQUARE", "CIRCLE", "FLAG", "BLACK HEART", "WHITE HEART", "HAIR", "JOKER", "CHESS")


class EmojiSourceError(OSError):
    """The emoji source could not be fetched or read; the message says which and how to provide it."""


def emoji_name(codepoint: int) -> str | None:
    """A lower-case caption name for an emoji code point, or None for ones not worth captioning."""
    name = unicodedata.name(chr(codepoint), "")
    if not name or name.startswith(_SKIP_PREFIXES):
        return None
    if any(script in name for script in _SKIP_WORDS):
        return None
    if name in _RENAME:
        return _RENAME[name]
    name = name.replace("LATIN CAPITAL LETTER", "LETTER")
    if not any(word in name for word in _TRUE_COLOUR):
        name = " ".join(w for w in name.split() if w not in ("BLACK", "WHITE"))
    return name.lower()


# ----------------------------------------------------------------------------------------------------
# Fetching and reading the Noto font


def _extract_deb_member(deb: Path, member_suffix: str, out_dir: Path) -> Path:
    """Extract the file ending in ``member_suffix`` from a .deb (an ar archive holding data.tar.*)."""
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise EmojiSourceError(f"{deb} is not a Debian package (no ar header)")
        while header := f.read(60):
            name, length = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            payload = f.read(length)
            f.read(length % 2)  # ar pads members to even offsets
            if not name.startswith("data.tar"):
                continue
            if name.endswith(".xz"):
                payload = lzma.decompress(payload)
            with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                for info in tar.getmembers():
                    if info.name.endswith(member_suffix) and info.isfile():
                        src = tar.extractfile(info)
                        assert src is not None
                        target = out_dir / Path(info.name).name
                        target.write_bytes(src.read())
                        return target
    raise EmojiSourceError(f"{deb} holds no file ending in {member_suffix!r}")


def download_noto_font(work_dir: Path) -> Path:
    """Fetch the Noto package with ``apt-get download`` into ``work_dir``; return the font file's path."""
    if shutil.which("apt-get") is None:
        raise EmojiSourceError(
            f"apt-get not found: cannot download {NOTO_PACKAGE}; pass the font file ({NOTO_FONT}) instead"
        )
    proc = subprocess.run(
        ["apt-get", "download", NOTO_PACKAGE], cwd=work_dir, capture_output=True, text=True, check=False
    )
    debs = sorted(work_dir.glob(f"{NOTO_PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmojiSourceError(
            f"apt-get download {NOTO_PACKAGE} failed ({detail}); run 'apt-get update' or pass {NOTO_FONT}"
        )
    return _extract_deb_member(debs[-1], NOTO_FONT, work_dir)


def _square_rgba(png: bytes, size: int) -> np.ndarray:
    """A bitmap centred on a transparent square canvas, resized to (size, size, 4) uint8."""
    img = Image.open(io.BytesIO(png)).convert("RGBA")
    side = max(img.size)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS))


def noto_emoji(font: Path, size: int = 64) -> Iterator[tuple[str, np.ndarray]]:
    """(caption name, (size, size, 4) uint8 RGBA) for each single-codepoint emoji of a CBDT colour font."""
    from fontTools.ttLib import TTFont  # the "data" extra

    try:
        tt = TTFont(str(font), lazy=True)
        strike = tt["CBDT"].strikeData[0]
        cmap = tt.getBestCmap()
    except Exception as exc:  # fontTools raises many types for a bad file
        raise EmojiSourceError(f"cannot read colour bitmaps from {font}: {exc}") from exc
    seen: set[str] = set()
    for codepoint, glyph in sorted(cmap.items()):
        name = emoji_name(codepoint)
        if name is None or glyph not in strike or glyph in seen:
            continue
        seen.add(glyph)
        bitmap = strike[glyph]
        bitmap.ensureDecompiled()
        yield name, _square_rgba(bitmap.imageData, size)


# ----------------------------------------------------------------------------------------------------
# Fluent flat emoji (npm package, MIT): SVGs named like "smiling-face-with-halo.svg", people in six skin tones


def download_fluent(work_dir: Path) -> Path:
    """Fetch the npm package ``fluentui-emoji`` with ``npm pack`` into ``work_dir``; return its SVG folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise EmojiSourceError(
            f"npm not found: cannot download {FLUENT_PACKAGE}; pass its icons/flat folder instead"
        )
    proc = subprocess.run(
        [npm, "pack", FLUENT_PACKAGE], cwd=work_dir, capture_output=True, text=True, check=False
    )
    tgz = sorted(work_dir.glob(f"{FLUENT_PACKAGE}-*.tgz"))
    if proc.returncode != 0 or not tgz:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmojiSourceError(f"npm pack {FLUENT_PACKAGE} failed ({detail})")
    folder = work_dir / "flat"
    folder.mkdir(exist_ok=True)
    with tarfile.open(tgz[-1]) as tar:
        for info in tar.getmembers():
            parts = info.name.split("/")
            if info.isfile() and parts[-2:-1] == ["flat"] and parts[-1].endswith(".svg"):
                src = tar.extractfile(info)
                assert src is not None
                (folder / Path(parts[-1]).name).write_bytes(src.read())
    return folder


def fluent_name(stem: str, stems: set[str]) -> str | None:
    """Caption name of a Fluent SVG file stem; None for skin-tone variants other than ``FLUENT_TONES``."""
    for tone in _ALL_TONES:
        base = stem.removesuffix("-" + tone)
        if base != stem and f"{base}-default" in stems:
            return base.replace("-", " ") if tone in FLUENT_TONES else None
    return stem.replace("-", " ")


def fluent_emoji(folder: Path, size: int = 64) -> Iterator[tuple[str, np.ndarray]]:
    """(caption name, (size, size, 4) uint8 RGBA) per flat Fluent SVG in ``folder``, rendered by cairosvg."""
    try:
        import cairosvg  # the "data" extra
    except ImportError as exc:
        raise EmojiSourceError("Fluent emoji need cairosvg: pip install 'dragdiff[data]'") from exc
    svgs = sorted(Path(folder).glob("*.svg"))
    stems = {p.stem for p in svgs}
    for svg in svgs:
        name = fluent_name(svg.stem, stems)
        if name is None:
            continue
        png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
        yield name, np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


# ----------------------------------------------------------------------------------------------------
# The pack


def build_emoji_pack(
    out: Path = DEFAULT_PACK,
    size: int = 64,
    font: Path | None = None,
    fluent: bool = False,
    fluent_dir: Path | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the emoji pack ``out`` (.npz): Noto Color Emoji, plus Fluent flat emoji when asked.

    ``font``: a local NotoColorEmoji.ttf (else downloaded with apt-get). ``fluent``: add Fluent emoji,
    from ``fluent_dir`` (the package's icons/flat folder) or downloaded with npm. ``limit`` keeps only the
    first ``limit`` emoji of each source (for tests). ``progress`` is called with each emoji's name.
    Returns ``out``; written atomically.
    """
    if size < 8:
        raise InputError(f"emoji size must be >= 8 px, got {size}")
    names: list[str] = []
    images: list[np.ndarray] = []
    sources: list[str] = []
    licences: list[str] = []

    def take(items: Iterator[tuple[str, np.ndarray]], source: str, licence: str) -> None:
        for count, (name, image) in enumerate(items):
            if limit is not None and count >= limit:
                break
            names.append(name)
            images.append(image)
            sources.append(source)
            licences.append(licence)
            if progress is not None:
                progress(name)

    with tempfile.TemporaryDirectory(prefix="dragdiff-emoji-") as tmp:
        font_path = Path(font) if font is not None else download_noto_font(Path(tmp))
        if not font_path.is_file():
            raise EmojiSourceError(f"emoji font not found: {font_path}")
        take(noto_emoji(font_path, size), "noto-color-emoji", NOTO_LICENCE)
        if fluent or fluent_dir is not None:
            folder = Path(fluent_dir) if fluent_dir is not None else download_fluent(Path(tmp))
            if not folder.is_dir():
                raise EmojiSourceError(f"Fluent emoji folder not found: {folder}")
            take(fluent_emoji(folder, size), "fluentui-emoji", FLUENT_LICENCE)
    if not names:
        raise EmojiSourceError(f"no emoji found in {font_path}")
    write_pack(out, np.stack(images), names, sources, licences)
    log.info("wrote %d emoji (%d px) to %s", len(names), size, out)
    return out


def write_pack(
    out: Path, images: np.ndarray, names: list[str], sources: list[str], licences: list[str]
) -> Path:
    """Write an emoji pack atomically: ``images`` uint8 (K, S, S, 4) RGBA plus K names, sources, licences."""
    if images.ndim != 4 or images.shape[-1] != 4 or images.dtype != np.uint8:
        raise InputError(f"emoji images must be uint8 (K, S, S, 4), got {images.dtype} {images.shape}")
    if not len(images) == len(names) == len(sources) == len(licences):
        raise InputError(
            f"need one name, source and licence per image, got {len(images)} images, {len(names)} names"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, images=images, names=np.array(names), sources=np.array(sources), licences=np.array(licences)
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Compositing


def emoji_phrase(name: str) -> str:
    """E.g. "a smiling face with sunglasses emoji"."""
    return f"{scenes.article(name)} {name} emoji"


@dataclass
class EmojiPack:
    """Emoji sprites and their names, as loaded from a pack written by ``build_emoji_pack``."""

    images: np.ndarray  # (K, S, S, 4) uint8 RGBA
    names: list[str]
    sources: list[str]
    licences: list[str]
    _device_cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path | str) -> EmojiPack:
        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"emoji pack not found: {path} (build it with 'dragdiff make-data --emoji-pack')"
            )
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "names", "sources", "licences"} - set(z.files)
            if missing:
                raise InputError(f"{path} is not an emoji pack: missing {sorted(missing)}")
            images = z["images"]
            names, sources, licences = (z[k].tolist() for k in ("names", "sources", "licences"))
        if images.ndim != 4 or images.shape[-1] != 4 or images.dtype != np.uint8 or len(images) != len(names):
            raise InputError(f"{path}: images must be uint8 (K, S, S, 4) with K names, got {images.shape}")
        return cls(images, names, sources, licences)

    def __len__(self) -> int:
        return len(self.names)

    def _sprites(self, device: torch.device) -> Tensor:
        """All sprites as uint8 (K, 4, S, S) on ``device``, uploaded once per device."""
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (
                torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous().to(device)
            )
        return self._device_cache[key]

    def plan(self, rng: np.random.Generator, n: int, shape_probability: float = 0.3) -> EmojiLayout:
        """Draw ``n`` random composites: a procedural background, sometimes (``shape_probability``) one
        procedural shape behind, then 1–2 emoji at random scale (half-size 0.12–0.36), position and rotation.
        """
        base = scenes.random_scenes(rng, n, max_objects=1)
        keep_shape = rng.random(n) < shape_probability
        base = [
            s if keep else scenes.Scene(s.background, (), light=s.light)
            for s, keep in zip(base, keep_shape, strict=True)
        ]
        count = rng.integers(1, 3, size=n)  # 1 or 2 emoji
        half = np.where(count[:, None] == 1, rng.uniform(0.18, 0.36, (n, 2)), rng.uniform(0.12, 0.24, (n, 2)))
        centres = scenes.spread_centres(rng, half, half * 1.2, count)  # (n, 2, 2)
        angle = np.where(rng.random((n, 2)) < 0.5, rng.uniform(-0.4, 0.4, (n, 2)), 0.0)
        which = rng.integers(len(self), size=(n, 2))
        captions = []
        for b in range(n):
            phrases = [emoji_phrase(self.names[which[b, j]]) for j in range(count[b])]
            phrases += [f"{scenes.article(o.colour)} {o.colour} {o.kind}" for o in base[b].objects]
            subject = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
            captions.append(f"{subject} {scenes.background_phrase(base[b].background)}")
        return EmojiLayout(base, count, which, centres, half, angle, captions)

    def draw(self, images: Tensor, layout: EmojiLayout) -> Tensor:
        """Paste the layout's emoji over ``images`` (n, 3, S, S) in [0, 1] (its rendered base scenes)."""
        dev = images.device
        sprites = self._sprites(dev)
        chosen = torch.from_numpy(layout.which).to(dev)  # (n, 2)
        present = torch.from_numpy(layout.count[:, None] > np.arange(2)).to(dev)  # (n, 2)
        for j in range(2):
            images = paste(
                images,
                sprites[chosen[:, j]],
                layout.centres[:, j],
                layout.half[:, j],
                layout.angle[:, j],
                present[:, j],
            )
        return images

    def composite(
        self, rng: np.random.Generator, n: int, size: int, device: torch.device | str | None = None
    ) -> tuple[Tensor, list[str]]:
        """``n`` composites (n, 3, size, size) in [0, 1] on ``device`` and their captions (see ``plan``)."""
        layout = self.plan(rng, n)
        return self.draw(scenes.render(layout.backgrounds, size, device), layout), layout.captions


@dataclass(frozen=True)
class EmojiLayout:
    """Where the emoji of n composites go."""

    backgrounds: list[scenes.Scene]  # the procedural scenes the emoji are pasted on
    count: np.ndarray  # (n,) 1 or 2 emoji per image
    which: np.ndarray  # (n, 2) pack indices
    centres: np.ndarray  # (n, 2, 2) (x, y) image units
    half: np.ndarray  # (n, 2) half-size, image units
    angle: np.ndarray  # (n, 2) radians, clockwise on screen
    captions: list[str]


def _affine(centre: np.ndarray, half: np.ndarray, angle: np.ndarray) -> Tensor:
    """``F.affine_grid`` matrices (n, 2, 3) mapping output coords in [-1, 1] to sprite coords in [-1, 1].

    A sprite of half-size h, centred at c (image units), rotated by a: q = R(−a)·(p − c)/h with
    p = (p' + 1)/2, i.e. q = R(−a)/(2h)·p' + R(−a)·(0.5 − c)/h.
    """
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # (n, 2, 2) = R(−a)
    lin = rot / (2 * half[:, None, None])
    shift = np.einsum("nij,nj->ni", rot, 0.5 - centre) / half[:, None]  # (n, 2)
    return torch.from_numpy(np.concatenate([lin, shift[:, :, None]], -1)).float()


def paste(
    images: Tensor,
    sprites: Tensor,
    centre: np.ndarray,
    half: np.ndarray,
    angle: np.ndarray,
    on: Tensor | None = None,
) -> Tensor:
    """Alpha-composite uint8 RGBA sprites (n, 4, s, s) over images (n, 3, S, S) in [0, 1].

    Sprite i is centred at ``centre[i]`` (x, y image units) with half-size ``half[i]`` and rotated by
    ``angle[i]`` radians (clockwise on screen); ``on`` (n,) bool switches pastes off per image.
    """
    theta = _affine(centre, half, angle).to(images.device)  # (n, 2, 3)
    rgba = sprites.float() / 255.0
    rgba = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)  # premultiplied, so edges blend cleanly
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (n, S, S, 2)
    warped = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if on is not None:
        warped = warped * on.to(warped.dtype)[:, None, None, None]
    return images * (1 - warped[:, 3:]) + warped[:, :3]


def pack_summary(pack: EmojiPack) -> str:
    """One line: how many emoji from which sources under which licences."""
    sources = sorted(set(pack.sources))
    licences = sorted(set(pack.licences))
    side = pack.images.shape[1]
    return f"{len(pack)} emoji ({side} px) from {', '.join(sources)}; licences: {'; '.join(licences)}"
