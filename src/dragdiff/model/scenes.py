"""Procedural scenes: coloured SDF shapes over patterned backgrounds, with exact drag ground truth.

A ``Scene`` is plain data (frozen dataclasses); ``render`` draws a batch of them at once on any torch device
by evaluating each shape's signed-distance field (SDF) over the pixel grid. Edits (``move``, ``resize``,
``stretch``) return new Scenes, so the same scene renders before and after a drag, and ``object_point`` says
exactly where a point fixed to an object lands afterwards.

Coordinates: image units, x to the right and y down, (0, 0) the top-left corner, (1, 1) the bottom-right one;
pixel (i, j) of an S×S render has its centre at ((j + 0.5) / S, (i + 0.5) / S). An object's local frame (u, v)
has (0, 0) at its centre and (±1, 0), (0, ±1) on the edges of its unrotated box, which is
``size·sx`` wide and ``size·sy`` tall on each side of the centre before rotation (v points down, like y).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dragdiff.types import InputError

# name -> base RGB in [0, 1]; random scenes jitter each channel by up to ±PALETTE_JITTER
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.96, 0.52, 0.08),
    "yellow": (0.97, 0.86, 0.16),
    "green": (0.18, 0.64, 0.22),
    "blue": (0.14, 0.32, 0.86),
    "purple": (0.52, 0.22, 0.72),
    "pink": (0.97, 0.52, 0.72),
    "brown": (0.50, 0.30, 0.14),
    "black": (0.07, 0.07, 0.08),
    "white": (0.96, 0.96, 0.95),
    "gray": (0.52, 0.52, 0.54),
    "cyan": (0.14, 0.76, 0.82),
}
PALETTE_JITTER = 0.05

# shape kinds; the SDFs live in _SDFS below, in the same order
KINDS: tuple[str, ...] = (
    "circle",
    "ellipse",
    "square",
    "rectangle",
    "triangle",
    "star",
    "heart",
    "ring",
    "hexagon",
    "diamond",
    "cross",
    "crescent",
)

# background pattern -> adjective used in captions ("" = none)
PATTERNS: dict[str, str] = {
    "plain": "",
    "gradient": "gradient",
    "radial": "glowing",
    "noise": "mottled",
    "stripes": "striped",
    "checker": "checkered",
    "dots": "dotted",
    "waves": "wavy",
}

_SHADOW_BLUR = 0.012  # drop-shadow softness, image units
_SHADOW_OFFSET = 0.35  # drop-shadow offset, in units of the object's size


@dataclass(frozen=True)
class Background:
    """A two-tone background: ``rgb`` blended towards ``rgb2`` by a pattern.

    ``angle`` orients gradients/stripes/waves (radians), ``scale`` is the pattern's number of cells across the
    image, ``seed`` drives value noise.
    """

    pattern: str = "plain"
    colour: str = "white"
    rgb: tuple[float, float, float] = PALETTE["white"]
    rgb2: tuple[float, float, float] = PALETTE["white"]
    angle: float = 0.0
    scale: float = 6.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise InputError(f"background pattern must be one of {sorted(PATTERNS)}, got {self.pattern!r}")
        if self.scale <= 0:
            raise InputError(f"background scale must be > 0, got {self.scale!r}")


@dataclass(frozen=True)
class SceneObject:
    """One shape: where it is, how big, its colour and shading.

    ``size`` is the half-extent in image units, ``sx``/``sy`` stretch it along its own axes, ``rotation`` is
    in radians (clockwise on screen, since y points down). ``shade`` (0–1) is the strength of the light
    gradient and highlight, ``shadow`` (0–1) the opacity of the soft drop shadow.
    """

    kind: str
    colour: str
    rgb: tuple[float, float, float]
    x: float
    y: float
    size: float
    sx: float = 1.0
    sy: float = 1.0
    rotation: float = 0.0
    shade: float = 0.5
    shadow: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"object kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not (self.size > 0 and self.sx > 0 and self.sy > 0):
            raise InputError(
                f"object size and stretch must be > 0, got size={self.size}, sx={self.sx}, sy={self.sy}"
            )


@dataclass(frozen=True)
class Scene:
    """A background plus objects drawn in list order (later objects occlude earlier ones).

    ``light`` is the direction the light comes from (radians, 0 = from the right, -π/2 = from the top);
    ``spatial`` asks ``caption`` to use a spatial word ("above", "to the left of") when the layout allows one.
    """

    background: Background
    objects: tuple[SceneObject, ...]
    light: float = -2.2
    spatial: bool = False


# ----------------------------------------------------------------------------------------------------
# Edits and object-local points


def _check_index(scene: Scene, index: int) -> None:
    if not 0 <= index < len(scene.objects):
        raise InputError(f"object index must be in [0, {len(scene.objects) - 1}], got {index}")


def _edit(scene: Scene, index: int, **changes: Any) -> Scene:
    _check_index(scene, index)
    objects = list(scene.objects)
    objects[index] = replace(objects[index], **changes)
    return replace(scene, objects=tuple(objects))


def move(scene: Scene, index: int, dx: float, dy: float) -> Scene:
    """The scene with object ``index`` translated by (dx, dy) image units."""
    _check_index(scene, index)
    obj = scene.objects[index]
    return _edit(scene, index, x=obj.x + dx, y=obj.y + dy)


def resize(scene: Scene, index: int, factor: float) -> Scene:
    """The scene with object ``index`` scaled by ``factor`` about its centre."""
    _check_index(scene, index)
    if factor <= 0:
        raise InputError(f"resize factor must be > 0, got {factor!r}")
    return _edit(scene, index, size=scene.objects[index].size * factor)


def stretch(scene: Scene, index: int, fx: float, fy: float) -> Scene:
    """The scene with object ``index`` stretched by (fx, fy) along its own axes (image axes if unrotated)."""
    _check_index(scene, index)
    if fx <= 0 or fy <= 0:
        raise InputError(f"stretch factors must be > 0, got ({fx!r}, {fy!r})")
    obj = scene.objects[index]
    return _edit(scene, index, sx=obj.sx * fx, sy=obj.sy * fy)


def object_point(scene: Scene, index: int, u: float, v: float) -> tuple[float, float]:
    """Where the object-local point (u, v) of object ``index`` lies in the image, in image units."""
    _check_index(scene, index)
    o = scene.objects[index]
    lx, ly = u * o.size * o.sx, v * o.size * o.sy
    c, s = math.cos(o.rotation), math.sin(o.rotation)
    return (o.x + c * lx - s * ly, o.y + s * lx + c * ly)


def object_coords(scene: Scene, index: int, x: float, y: float) -> tuple[float, float]:
    """Inverse of ``object_point``: the object-local (u, v) of image point (x, y)."""
    _check_index(scene, index)
    o = scene.objects[index]
    c, s = math.cos(o.rotation), math.sin(o.rotation)
    dx, dy = x - o.x, y - o.y
    return ((c * dx + s * dy) / (o.size * o.sx), (-s * dx + c * dy) / (o.size * o.sy))


# ----------------------------------------------------------------------------------------------------
# Captions


def article(word: str) -> str:
    """The article ("a" or "an") for a phrase starting with ``word``."""
    w = word.lower()
    if w.startswith(("eu", "uni", "use", "one", "once")):  # vowel letter, consonant sound
        return "a"
    return "an" if w[:1] in ("a", "e", "i", "o", "u") or w.startswith(("hour", "honest")) else "a"


def _phrase(obj: SceneObject) -> str:
    return f"{article(obj.colour)} {obj.colour} {obj.kind}"


def _relation(a: SceneObject, b: SceneObject) -> str | None:
    """Spatial word for "a <word> b", or None when the layout is ambiguous."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dy) > 0.15 and abs(dy) > 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    if abs(dx) > 0.15 and abs(dx) > 1.5 * abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return None


def background_phrase(bg: Background) -> str:
    """E.g. "on a striped green background"."""
    words = [w for w in (PATTERNS[bg.pattern], bg.colour) if w]
    return f"on {article(words[0])} {' '.join(words)} background"


def caption(scene: Scene) -> str:
    """E.g. "a red star and a blue square on a yellow background" or "a red star above a blue square on …"."""
    objs = scene.objects
    rel = _relation(objs[0], objs[1]) if scene.spatial and len(objs) == 2 else None
    if rel is not None:
        subject = f"{_phrase(objs[0])} {rel} {_phrase(objs[1])}"
    elif len(objs) == 0:
        return background_phrase(scene.background).removeprefix("on ")  # "a striped green background"
    elif len(objs) == 1:
        subject = _phrase(objs[0])
    else:
        subject = ", ".join(_phrase(o) for o in objs[:-1]) + " and " + _phrase(objs[-1])
    return f"{subject} {background_phrase(scene.background)}"


# ----------------------------------------------------------------------------------------------------
# Random scenes


def _numpy_rng(rng: np.random.Generator | torch.Generator) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    seed = torch.randint(0, 2**62, (1,), generator=rng, device=rng.device).item()
    return np.random.default_rng(int(seed))


def _rows(a: np.ndarray) -> list:
    return a.tolist()


_SIZE_RANGE = np.array(
    [(0.0, 0.0), (0.16, 0.30), (0.11, 0.22), (0.09, 0.18), (0.08, 0.16)]
)  # by object count
_NAMES = np.array(list(PALETTE))
_BASE_RGB = np.array(list(PALETTE.values()))  # (12, 3)
_CANDIDATES = 12  # placement tries per object


def _random_backgrounds(r: np.random.Generator, n: int) -> list[Background]:
    """``n`` backgrounds; the second tone is the first one lighter or darker, so one colour word fits."""
    names = r.integers(len(PALETTE), size=n)
    rgb = np.clip(_BASE_RGB[names] + r.uniform(-PALETTE_JITTER, PALETTE_JITTER, (n, 3)), 0.0, 1.0)
    bright = rgb.sum(1)
    towards = np.where((bright > 2.2) | ((bright > 1.2) & (r.random(n) < 0.5)), 0.0, 1.0)[:, None]
    mix = r.uniform(0.2, 0.45, (n, 1))
    rgb2 = rgb * (1 - mix) + towards * mix
    patterns = r.integers(len(PATTERNS), size=n)
    angle, scale, seed = r.uniform(0, math.pi, n), r.uniform(3.0, 10.0, n), r.integers(2**31, size=n)
    pattern_names = list(PATTERNS)
    return [
        Background(pattern_names[p], str(_NAMES[c]), (a[0], a[1], a[2]), (b[0], b[1], b[2]), ang, sc, int(sd))
        for p, c, a, b, ang, sc, sd in zip(
            patterns, names, _rows(rgb), _rows(rgb2), _rows(angle), _rows(scale), seed, strict=True
        )
    ]


def spread_centres(
    r: np.random.Generator, size: np.ndarray, reach: np.ndarray, count: np.ndarray
) -> np.ndarray:
    """Centres (n, m, 2) for m objects of half-sizes ``size`` (n, m), reaching ``reach`` (n, m) from their
    centres, of which the first ``count`` (n,) are real: inside the frame (but for rotated corners) and apart
    from the objects placed before.

    Per object, the first of ``_CANDIDATES`` random centres that clears every earlier object (centre distance
    above 0.7·(sum of sizes)) wins, else the one that comes closest to clearing them.
    """
    n, m = size.shape
    margin = np.minimum(0.45, reach)[:, :, None, None]  # (n, m, 1, 1)
    cand = margin + r.random((n, m, _CANDIDATES, 2)) * (1 - 2 * margin)  # (n, m, K, 2)
    centres = cand[:, :, 0].copy()  # (n, m, 2)
    for j in range(1, m):
        dist = np.linalg.norm(cand[:, j, :, None] - centres[:, None, :j], axis=-1)  # (n, K, j)
        gap = dist - 0.7 * (size[:, j, None, None] + size[:, None, :j])
        gap = np.where(np.arange(j) < count[:, None, None], gap, np.inf).min(-1)  # (n, K)
        ok = gap > 0
        pick = np.where(ok.any(1), ok.argmax(1), gap.argmax(1))  # (n,)
        centres[:, j] = cand[np.arange(n), j, pick]
    return centres


def random_scenes(
    rng: np.random.Generator | torch.Generator,
    n: int,
    min_objects: int = 1,
    max_objects: int = 4,
    kinds: Sequence[str] = KINDS,
    spatial_probability: float = 0.3,
) -> list[Scene]:
    """``n`` random scenes of ``min_objects``–``max_objects`` shapes each, parameters drawn in bulk.

    Sizes 0.08–0.30 (smaller when there are more objects), objects inside the frame, objects' colours
    differ from the background's, 40 % of objects stretched, half rotated by up to ±0.5 rad.
    """
    if not 1 <= min_objects <= max_objects <= 4:
        raise InputError(f"need 1 <= min_objects <= max_objects <= 4, got {min_objects}, {max_objects}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
    r = _numpy_rng(rng)
    m = max_objects
    backgrounds = _random_backgrounds(r, n)
    count = r.integers(min_objects, max_objects + 1, size=n)  # (n,)
    lo, hi = _SIZE_RANGE[count, 0, None], _SIZE_RANGE[count, 1, None]
    size = lo + r.random((n, m)) * (hi - lo)  # (n, m)
    stretch = np.where(r.random((n, m, 1)) < 0.4, np.exp(r.uniform(-0.25, 0.25, (n, m, 2))), 1.0)  # (n, m, 2)
    centres = spread_centres(r, size, size * stretch.max(-1), count)  # (n, m, 2)
    bg_index = np.array([list(PALETTE).index(b.colour) for b in backgrounds])
    # object colours: any palette entry but the background's (shift indices past it)
    colour = r.integers(len(PALETTE) - 1, size=(n, m))
    colour = colour + (colour >= bg_index[:, None])
    rgb = np.clip(_BASE_RGB[colour] + r.uniform(-PALETTE_JITTER, PALETTE_JITTER, (n, m, 3)), 0.0, 1.0)
    kind = r.integers(len(kinds), size=(n, m))
    rotation = np.where(r.random((n, m)) < 0.5, r.uniform(-0.5, 0.5, (n, m)), 0.0)
    shade, shadow = r.uniform(0.0, 0.8, (n, m)), r.uniform(0.0, 0.5, (n, m))
    light, spatial = r.uniform(-2.8, -0.4, n), r.random(n) < spatial_probability
    rows = zip(
        _rows(kind), _rows(colour), _rows(rgb), _rows(centres), _rows(size), _rows(stretch),
        _rows(rotation), _rows(shade), _rows(shadow), strict=True,
    )  # fmt: skip
    scenes = []
    for b, (k, c, col, xy, sz, st, rot, sh, sd) in enumerate(rows):
        objects = tuple(
            SceneObject(
                kind=kinds[k[i]],
                colour=str(_NAMES[c[i]]),
                rgb=(col[i][0], col[i][1], col[i][2]),
                x=xy[i][0],
                y=xy[i][1],
                size=sz[i],
                sx=st[i][0],
                sy=st[i][1],
                rotation=rot[i],
                shade=sh[i],
                shadow=sd[i],
            )
            for i in range(count[b])
        )
        scenes.append(Scene(backgrounds[b], objects, light=float(light[b]), spatial=bool(spatial[b])))
    return scenes


def random_scene(rng: np.random.Generator | torch.Generator, **kwargs: Any) -> Scene:
    """One random scene; keyword arguments as for ``random_scenes``."""
    return random_scenes(rng, 1, **kwargs)[0]


# ----------------------------------------------------------------------------------------------------
# Signed-distance fields in unit space: shapes fill roughly [-1, 1]², y points UP (the caller flips v),
# negative inside. Each takes and returns tensors of any (equal) shape.


def _len(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y + 1e-12)


def _box(x: Tensor, y: Tensor, bx: float, by: float) -> Tensor:
    qx, qy = x.abs() - bx, y.abs() - by
    return _len(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _circle(x: Tensor, y: Tensor) -> Tensor:
    return _len(x, y) - 1.0


def _ellipse(x: Tensor, y: Tensor) -> Tensor:  # approximate SDF, exact on the boundary
    return (_len(x, y / 0.62) - 1.0) * 0.62


def _square(x: Tensor, y: Tensor) -> Tensor:
    return _box(x, y, 0.78, 0.78) - 0.08


def _rectangle(x: Tensor, y: Tensor) -> Tensor:
    return _box(x, y, 0.92, 0.52) - 0.06


def _triangle(x: Tensor, y: Tensor) -> Tensor:  # equilateral, apex up, centroid at 0 (after Inigo Quilez)
    r, k = 1.0, math.sqrt(3.0)
    y = y + 0.15
    px, py = x.abs() - r, y + r / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - px.clamp(-2 * r, 0)
    return -_len(px, py) * torch.sign(py)


def _star(x: Tensor, y: Tensor) -> Tensor:  # five points, outer radius 1, inner ratio 0.45
    k1x, k1y = 0.809016994375, -0.587785252292
    px, py = x.abs(), y
    d = 2 * (k1x * px + k1y * py).clamp(min=0)
    px, py = px - d * k1x, py - d * k1y
    d = 2 * (-k1x * px + k1y * py).clamp(min=0)
    px, py = px + d * k1x, py - d * k1y
    px, py = px.abs(), py - 1.0
    bax, bay = 0.45 * -k1y, 0.45 * k1x - 1.0
    h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0.0, 1.0)
    return _len(px - bax * h, py - bay * h) * torch.sign(py * bax - px * bay)


def _heart(x: Tensor, y: Tensor) -> Tensor:  # after Inigo Quilez, rescaled to about [-1, 1]²
    s = 1.55
    px, py = x.abs() / s, (y + 1.0) / s * 0.94
    upper = _len(px - 0.25, py - 0.75) - math.sqrt(2.0) / 4
    t = 0.5 * (px + py).clamp(min=0)
    lower = torch.sqrt(torch.minimum(px * px + (py - 1) ** 2, (px - t) ** 2 + (py - t) ** 2)) * torch.sign(
        px - py
    )
    return torch.where(py + px > 1.0, upper, lower) * s


def _ring(x: Tensor, y: Tensor) -> Tensor:
    return (_len(x, y) - 0.72).abs() - 0.28


def _hexagon(x: Tensor, y: Tensor) -> Tensor:  # circumradius 1, flat top (after Inigo Quilez)
    kx, ky, kz, r = -0.866025404, 0.5, 0.577350269, 0.866025404
    px, py = y.abs(), x.abs()
    d = 2 * (kx * px + ky * py).clamp(max=0)
    px, py = px - d * kx, py - d * ky
    px = px - px.clamp(-kz * r, kz * r)
    return _len(px, py - r) * torch.sign(py - r)


def _diamond(x: Tensor, y: Tensor) -> Tensor:  # rhombus with half-diagonals 0.75 × 1 (after Inigo Quilez)
    bx, by = 0.75, 1.0
    px, py = x.abs(), y.abs()
    h = (((bx - 2 * px) * bx - (by - 2 * py) * by) / (bx * bx + by * by)).clamp(-1.0, 1.0)
    d = _len(px - 0.5 * bx * (1 - h), py - 0.5 * by * (1 + h))
    return d * torch.sign(px * by + py * bx - bx * by)


def _cross(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 0.95, 0.3), _box(x, y, 0.3, 0.95))


def _crescent(x: Tensor, y: Tensor) -> Tensor:
    return torch.maximum(_len(x, y) - 1.0, -(_len(x - 0.5, y - 0.25) - 0.82))


_SDFS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    _circle,
    _ellipse,
    _square,
    _rectangle,
    _triangle,
    _star,
    _heart,
    _ring,
    _hexagon,
    _diamond,
    _cross,
    _crescent,
)
assert len(_SDFS) == len(KINDS)


# ----------------------------------------------------------------------------------------------------
# Backgrounds: a blend factor t in [0, 1] per pixel, then rgb·(1−t) + rgb2·t


def _hash01(ix: Tensor, iy: Tensor, seed: Tensor) -> Tensor:
    """A deterministic pseudo-random value in [0, 1) per integer lattice point (same on every device)."""
    m = 0xFFFFFFFF
    h = (ix * 374761393 + iy * 668265263 + seed * 1442695041) & m
    h = ((h ^ (h >> 13)) * 1274126177) & m
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() / 65536.0


def _value_noise(x: Tensor, y: Tensor, seed: Tensor) -> Tensor:
    """Smooth value noise on the unit lattice; x, y (b, S, S) in lattice units, seed (b, 1, 1) int64."""
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = x0.long(), y0.long()
    v00, v10 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    v01, v11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    return torch.lerp(torch.lerp(v00, v10, fx), torch.lerp(v01, v11, fx), fy)


def _aa_step(d: Tensor, px: float) -> Tensor:
    """Anti-aliased step: 1 where d < 0, over a one-pixel ramp (d in image units, px = one pixel)."""
    return (0.5 - d / px).clamp(0.0, 1.0)


def _pattern_blend(pattern: str, x: Tensor, y: Tensor, p: Tensor, seed: Tensor, px: float) -> Tensor:
    """Blend factor (b, S, S) for one pattern; x, y (1, S, S); p (b, 1, 1, 4) = cos, sin, scale, phase."""
    c, s, k, phase = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    along = (x - 0.5) * c + (y - 0.5) * s  # (b, S, S), signed distance along the pattern direction
    if pattern == "plain":
        return torch.zeros_like(along)
    if pattern == "gradient":
        return (along / 1.2 + 0.5).clamp(0.0, 1.0)
    if pattern == "radial":
        return (_len(x - 0.5 - 0.2 * c, y - 0.5 - 0.2 * s) / 0.9).clamp(0.0, 1.0)
    if pattern == "noise":
        n = 0.65 * _value_noise(x * k, y * k, seed) + 0.35 * _value_noise(x * 2.7 * k, y * 2.7 * k, seed + 7)
        return ((n - 0.25) * 1.6).clamp(0.0, 1.0)
    if pattern == "stripes":
        f = torch.frac(along * k + phase) - 0.5  # period 1/k
        return _aa_step(f.abs() / k - 0.25 / k, px)
    if pattern == "checker":
        u, v = torch.frac(x * k + phase) - 0.5, torch.frac(y * k + phase) - 0.5
        a, b = _aa_step(u.abs() / k - 0.25 / k, px), _aa_step(v.abs() / k - 0.25 / k, px)
        return a + b - 2 * a * b  # xor
    if pattern == "dots":
        u, v = torch.frac(x * k + phase) - 0.5, torch.frac(y * k + phase) - 0.5
        return _aa_step(_len(u, v) / k - 0.28 / k, px)
    if pattern == "waves":
        w = torch.sin(
            (along * k + 0.15 * torch.sin((-(x - 0.5) * s + (y - 0.5) * c) * 9.0 + phase * 6.3)) * 6.283
        )
        return 0.5 + 0.5 * w
    raise InputError(f"unknown background pattern {pattern!r}")


def _render_backgrounds(scenes: Sequence[Scene], x: Tensor, y: Tensor, px: float) -> Tensor:
    """(B, 3, S, S) backgrounds."""
    dev = x.device
    bgs = [s.background for s in scenes]
    rgb = torch.tensor([[b.rgb, b.rgb2] for b in bgs], dtype=torch.float32).to(dev)  # (B, 2, 3)
    params = torch.tensor(
        [[math.cos(b.angle), math.sin(b.angle), b.scale, (b.seed % 1000) / 1000.0] for b in bgs],
        dtype=torch.float32,
    ).to(dev)  # (B, 4)
    seeds = torch.tensor([b.seed for b in bgs], dtype=torch.int64).to(dev)  # (B,)
    t = torch.empty(len(scenes), *x.shape[-2:], device=dev)  # (B, S, S)
    pattern_index = {p: i for i, p in enumerate(PATTERNS)}
    labels = np.array([pattern_index[b.pattern] for b in bgs])
    for p, idx in _groups(labels, dev):
        t[idx] = _pattern_blend(
            list(PATTERNS)[p], x, y, params[idx, None, None, :], seeds[idx, None, None], px
        )
    t = t[:, None]  # (B, 1, S, S)
    return rgb[:, 0, :, None, None] * (1 - t) + rgb[:, 1, :, None, None] * t


# ----------------------------------------------------------------------------------------------------
# Objects: every object of the batch is evaluated at once, flattened slot-major (all first objects, then all
# second objects, …), so draw order is a loop over at most four contiguous slices.


@dataclass(frozen=True)
class _Flat:
    """The batch's objects, flattened slot-major; ``params`` (M, 13) on the device, the rest on the CPU."""

    params: Tensor  # x, y, half-width, half-height, cos, sin, r, g, b, shade, shadow, light x, light y
    batch: np.ndarray  # (M,) scene index of each object
    kind: np.ndarray  # (M,) index into KINDS
    slots: list[slice]  # objects of draw-order slot n: params[slots[n]]


def _flatten(scenes: Sequence[Scene], device: torch.device) -> _Flat:
    kind_index = {k: i for i, k in enumerate(KINDS)}
    rows: list[tuple[float, ...]] = []
    batch: list[int] = []
    kind: list[int] = []
    slots: list[slice] = []
    for n in range(max((len(s.objects) for s in scenes), default=0)):
        start = len(rows)
        for b, scene in enumerate(scenes):
            if n < len(scene.objects):
                o = scene.objects[n]
                rows.append((
                    o.x, o.y, o.size * o.sx, o.size * o.sy, math.cos(o.rotation), math.sin(o.rotation),
                    *o.rgb, o.shade, o.shadow, math.cos(scene.light), math.sin(scene.light),
                ))  # fmt: skip
                batch.append(b)
                kind.append(kind_index[o.kind])
        slots.append(slice(start, len(rows)))
    params = torch.tensor(rows, dtype=torch.float32).reshape(-1, 13).to(device)
    return _Flat(params, np.array(batch, dtype=np.int64), np.array(kind, dtype=np.int64), slots)


def _groups(labels: np.ndarray, device: torch.device) -> list[tuple[int, Tensor]]:
    """(label, indices on ``device``) for each distinct label, all uploaded in one transfer."""
    order = np.argsort(labels, kind="stable")
    values, starts = np.unique(labels[order], return_index=True)
    flat = torch.from_numpy(order).to(device)
    bounds = [*starts.tolist(), len(order)]
    return [(int(k), flat[bounds[i] : bounds[i + 1]]) for i, k in enumerate(values)]


def _distance(xs: Tensor, ys: Tensor, obj: Tensor, kinds: np.ndarray) -> Tensor:
    """Signed distance in image units from points (M, ..., S, S) to each object (M, 13)."""
    shape = (-1,) + (1,) * (xs.dim() - 1)
    cx, cy, hx, hy, c, s = (obj[:, i].reshape(shape) for i in range(6))
    dx, dy = xs - cx, ys - cy
    u = (c * dx + s * dy) / hx  # object-local, unit box
    v = (-s * dx + c * dy) / hy
    d = torch.empty_like(u)
    for k, idx in _groups(kinds, xs.device):
        d[idx] = _SDFS[k](u[idx], -v[idx])  # the SDFs have y up
    return d * torch.minimum(hx, hy)  # unit-space distance -> image units (exact for unstretched shapes)


def _shade(obj: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Shaded object colours (M, 3, S, S): a light-direction gradient plus a soft highlight."""
    cx, cy, hx, hy = (obj[:, i, None, None] for i in range(4))
    rgb, strength = obj[:, 6:9, None, None], obj[:, 9, None, None]
    lx, ly = obj[:, 11, None, None], obj[:, 12, None, None]
    r = torch.maximum(hx, hy)
    ox, oy = (x - cx) / r, (y - cy) / r  # (M, S, S), image-aligned offset from the centre
    ramp = (ox * lx + oy * ly).clamp(-1.2, 1.2)  # +1 towards the light
    spot = torch.exp(-((ox - 0.45 * lx) ** 2 + (oy - 0.45 * ly) ** 2) / 0.12)
    lit = rgb * (1 + strength[:, None] * 0.35 * ramp[:, None]) + (strength * 0.45 * spot)[:, None] * (1 - rgb)
    return lit.clamp(0.0, 1.0)


def _grid(size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates x, y, each (1, S, S), in image units."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    return x[None], y[None]


def _coverage(flat: _Flat, x: Tensor, y: Tensor, px: float) -> tuple[Tensor, Tensor]:
    """Anti-aliased coverage and drop-shadow opacity of every object, each (M, S, S)."""
    obj = flat.params
    off = _SHADOW_OFFSET * torch.minimum(obj[:, 2], obj[:, 3])[:, None, None]  # (M, 1, 1)
    # the shadow is the object's shape shifted away from the light: evaluate the SDF at p + offset·light
    xs = torch.stack([x.expand(len(obj), -1, -1), x + off * obj[:, 11, None, None]], 1)  # (M, 2, S, S)
    ys = torch.stack([y.expand(len(obj), -1, -1), y + off * obj[:, 12, None, None]], 1)
    d = _distance(xs, ys, obj, flat.kind)  # (M, 2, S, S)
    cover = _aa_step(d[:, 0], px)
    shadow = torch.sigmoid(-d[:, 1] / _SHADOW_BLUR) * obj[:, 10, None, None]
    return cover, shadow


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def render(scenes: Scene | Sequence[Scene], size: int, device: torch.device | str | None = None) -> Tensor:
    """Render a batch of scenes: (B, 3, size, size) float32 in [0, 1] on ``device`` (default CPU).

    A single Scene gives one (3, size, size) image. Deterministic given the scenes. Every object of the
    batch is evaluated at once (one SDF call per kind); the objects are then composited in draw order, one
    slot at a time.
    """
    if isinstance(scenes, Scene):
        return render([scenes], size, device)[0]
    if size < 1:
        raise InputError(f"render size must be >= 1, got {size}")
    if len(scenes) == 0:
        raise InputError("render needs at least one scene, got none")
    dev = _device(device)
    x, y = _grid(size, dev)
    img = _render_backgrounds(scenes, x, y, 1.0 / size)  # (B, 3, S, S)
    flat = _flatten(scenes, dev)
    if len(flat.batch) == 0:
        return img.clamp(0.0, 1.0)
    cover, shadow = _coverage(flat, x, y, 1.0 / size)  # (M, S, S) each
    colour = _shade(flat.params, x, y)  # (M, 3, S, S)
    batch = torch.from_numpy(flat.batch).to(dev)  # (M,)
    for sl in flat.slots:
        b = batch[sl]  # scenes with an object in this slot (each at most once)
        under = img[b] * (1 - shadow[sl, None])
        img = img.index_copy(0, b, torch.lerp(under, colour[sl], cover[sl, None]))
    return img.clamp(0.0, 1.0)


def render_masks(scenes: Sequence[Scene], size: int, device: torch.device | str | None = None) -> Tensor:
    """Visible coverage per object slot: (B, N, size, size) in [0, 1], after occlusion by later objects."""
    if len(scenes) == 0:
        raise InputError("render_masks needs at least one scene, got none")
    dev = _device(device)
    flat = _flatten(scenes, dev)
    covers = torch.zeros(len(scenes), len(flat.slots), size, size, device=dev)  # (B, N, S, S)
    if len(flat.batch) == 0:
        return covers
    x, y = _grid(size, dev)
    cover, _ = _coverage(flat, x, y, 1.0 / size)  # (M, S, S)
    slot = np.concatenate([np.full(sl.stop - sl.start, n) for n, sl in enumerate(flat.slots)])
    covers[torch.from_numpy(flat.batch).to(dev), torch.from_numpy(slot).to(dev)] = cover
    # visible_n = cover_n · Π_{m>n} (1 − cover_m)
    above = torch.cumprod((1 - covers).flip(1), 1).flip(1)  # Π_{m>=n}
    above = torch.cat([above[:, 1:], torch.ones_like(above[:, :1])], 1)  # Π_{m>n}
    return covers * above
