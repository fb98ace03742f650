"""A ground-truth drag suite: procedural scenes where the exact result of every drag is known.

Each case takes a random scene (``dragdiff.model.scenes``) and edits one or more of its objects so that the
handles travel a set distance ("near" / "mid" / "far"). Eight kinds of edit:

- ``move``, ``move_multi``: the topmost object moved, one handle or two on it;
- ``stretch``: the topmost object stretched along one of its axes (two handles on opposite sides);
- ``resize``: the topmost object scaled (two handles on a diagonal);
- ``center``: the topmost object moved by one handle on its flat centre (the pixel farthest from its outline);
- ``multi_object``: every object (2 or 3) moved in its own direction, one handle on each;
- ``crossing``: the topmost object dragged over another one and left partly covering it (the other stays);
- ``occluded``: an object partly hidden behind the topmost one is dragged; it moves *behind* it (the
  renderer's draw order is the depth order, and a drag does not change it), so the front object stays whole.

Handles sit on visible parts of their objects; their targets are where those object-fixed points land in the
edited scene (``object_point``), and the edited scene's render is the exact target image. Half of the cases
carry an editable-region mask (the moved objects' before/after footprints, generously dilated, as a user
would paint it).

On disk it is a DragBench folder (category = edit kind) with three extra files per sample: ``target.png``,
``edit_region.png`` (pixels the exact edit changes, slightly dilated) and ``gt.json`` (exact float targets,
the object of each handle, both scenes, the case parameters). Case ``i`` depends only on (seed, kinds, i): a
larger ``count`` extends a suite. The first four kinds draw their cases exactly as the four-kind suite did,
so ``kinds=LEGACY_KINDS`` rebuilds a suite made before the other four existed.

Scores (``gt_metrics``): how far the dragged content landed from the exact target (template matching of each
handle's source neighbourhood in the edit), fidelity to the exact target inside the edited region, and
preservation of the source outside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dragdiff.bench import metrics
from dragdiff.bench.dragbench import (
    GT_FILE,
    REGION_FILE,
    TARGET_FILE,
    DragBenchSample,
    write_dragbench_sample,
)
from dragdiff.bench.lpips import LPIPS
from dragdiff.diffusion.inversion import tensor_to_pil
from dragdiff.io import atomic_save_image, atomic_write_json
from dragdiff.model import scenes as sc
from dragdiff.types import DragInstruction, InputError

GT_SIZE = 128  # the embedded model's native size
LEGACY_KINDS = ("move", "move_multi", "stretch", "resize")  # the first four kinds; their draws never change
EDIT_KINDS = (*LEGACY_KINDS, "center", "multi_object", "crossing", "occluded")
DISTANCES = {"near": 0.08, "mid": 0.16, "far": 0.26}  # handle travel, as a fraction of the image side
_MARGIN_PX = 2  # handles and targets stay this far inside the frame
_TRIES = 64
_POINT_TRIES = 8  # random spots tried per object for a visible handle
_KEPT = 0.8  # new kinds: share of a handle's visible neighbourhood that must stay in view at its target
_HIDDEN = (0.15, 0.6)  # occluded: share of the back object the front one hides in the source
_COVERED = (0.1, 0.85)  # crossing: share of the crossed object the moved one covers at the end
_FACTORS = (0.5, 2.2)  # stretch/resize factors allowed (template matching searches scales 0.5-2)
# (x, y) scales tried when locating dragged content: uniform (resize) and along one axis (stretch)
_STEPS = (0.5, 0.7, 1.4, 2.0)
MATCH_SCALES = (
    (1.0, 1.0),
    *((f, f) for f in _STEPS),
    *((f, 1.0) for f in _STEPS),
    *((1.0, f) for f in _STEPS),
)


@dataclass(frozen=True)
class GtCase:
    """One drag with its exact outcome. Points are (x, y) in pixels of a ``size``-px render."""

    index: int
    kind: str
    distance: str
    with_mask: bool
    source: sc.Scene
    target: sc.Scene
    objects: tuple[int, ...]  # per handle: the index of the object it sits on (in both scenes)
    handles: tuple[tuple[float, float], ...]  # integer pixels
    targets: tuple[tuple[float, float], ...]  # exact (float) pixels where the handles' object points land
    size: int

    @property
    def moved(self) -> tuple[int, ...]:
        """The edited objects, in draw order."""
        return tuple(sorted(set(self.objects)))


def _to_px(p: tuple[float, float], size: int) -> tuple[float, float]:
    return (p[0] * size - 0.5, p[1] * size - 0.5)  # image units -> pixel-centre coordinates


def _to_units(p: tuple[float, float], size: int) -> tuple[float, float]:
    return ((p[0] + 0.5) / size, (p[1] + 0.5) / size)


def _snap(p: tuple[float, float]) -> tuple[float, float]:
    return (float(round(p[0])), float(round(p[1])))


def _covered_uv(cover: np.ndarray, scene: sc.Scene, obj: int, uv: tuple[float, float], size: int) -> bool:
    x, y = (round(c) for c in _to_px(sc.object_point(scene, obj, *uv), size))
    return 0 <= x < size and 0 <= y < size and cover[y, x] > 0.5


_Edit = tuple[sc.Scene, list[tuple[float, float]]] | None
# (source scene, edited scene, handles as (object index, object-local point)), or None if the draw misses
_Draw = tuple[sc.Scene, sc.Scene, list[tuple[int, tuple[float, float]]]] | None


def _legacy_edit(
    rng: np.random.Generator, kind: str, scene: sc.Scene, obj: int, travel: float, size: int
) -> _Edit:
    """(edited scene, handle object-local points) for one legacy kind, or None if this draw does not fit.

    The draws of the four-kind suite, kept exactly so that its cases stay reproducible."""
    o = scene.objects[obj]
    cover = sc.render_masks([scene], size)[0, obj].numpy()  # coverage only decides where handles may sit

    def on_object(candidates: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [uv for uv in candidates if _covered_uv(cover, scene, obj, uv, size)]

    if kind in ("move", "move_multi"):
        theta = rng.uniform(0, 2 * math.pi)
        edited = sc.move(scene, obj, travel * math.cos(theta), travel * math.sin(theta))
        n = 1 if kind == "move" else 2
        us = [rng.uniform(-0.5, 0.5)] if n == 1 else [rng.uniform(-0.65, -0.2), rng.uniform(0.2, 0.65)]
        uvs = on_object([(u, rng.uniform(-0.4, 0.4)) for u in us])
        return (edited, uvs) if len(uvs) == n else None
    travel = travel / 2  # two handles move apart (or together): the distance between them changes by `travel`
    if kind == "stretch":
        axis = int(rng.integers(2))
        for r in np.linspace(0.85, 0.3, 12):  # the outermost pair of points on the object along the axis
            uvs = on_object([(r, 0.0), (-r, 0.0)] if axis == 0 else [(0.0, r), (0.0, -r)])
            if len(uvs) == 2:
                break
        else:
            return None
        half = r * o.size * (o.sx if axis == 0 else o.sy)  # centre-to-handle distance
        factor = 1 + travel / half * (1 if rng.random() < 0.7 else -1)  # mostly longer, sometimes shorter
        if not _FACTORS[0] <= factor <= _FACTORS[1]:
            return None
        return sc.stretch(scene, obj, *((factor, 1.0) if axis == 0 else (1.0, factor))), uvs
    if kind == "resize":
        phi = rng.uniform(0, math.pi)
        for r in np.linspace(0.8, 0.3, 11):
            uvs = on_object(
                [(r * math.cos(phi), r * math.sin(phi)), (-r * math.cos(phi), -r * math.sin(phi))]
            )
            if len(uvs) == 2:
                break
        else:
            return None
        half = r * o.size * math.hypot(o.sx * math.cos(phi), o.sy * math.sin(phi))
        factor = 1 + travel / half * (1 if rng.random() < 0.6 else -1)  # grow or shrink
        if not _FACTORS[0] <= factor <= _FACTORS[1]:
            return None
        return sc.resize(scene, obj, factor), uvs
    raise InputError(f"unknown edit kind {kind!r}; choose one of {EDIT_KINDS}")


def _legacy(rng: np.random.Generator, kind: str, travel: float, size: int) -> _Draw:
    """move / move_multi / stretch / resize of the topmost object of a 1–3-object scene."""
    scene = sc.random_scene(rng, min_objects=1, max_objects=3)
    obj = len(scene.objects) - 1  # the topmost object: its handles are visible
    made = _legacy_edit(rng, kind, scene, obj, travel, size)
    if made is None:
        return None
    edited, uvs = made
    return scene, edited, [(obj, uv) for uv in uvs]


def _visible(scene: sc.Scene, size: int) -> np.ndarray:
    """(N, S, S) visible coverage of each object of ``scene`` (after occlusion by the ones drawn later)."""
    return sc.render_masks([scene], size)[0].numpy()


def _hidden_share(scene: sc.Scene, obj: int, size: int) -> float:
    """The share of object ``obj``'s in-frame area that the objects drawn after it hide."""
    alone = sc.render_masks([replace(scene, objects=(scene.objects[obj],))], size)[0, 0].sum().item()
    seen = sc.render_masks([scene], size)[0, obj].sum().item()
    return 1.0 - seen / max(alone, 1e-6)


def _point_on(
    rng: np.random.Generator, cover: np.ndarray, scene: sc.Scene, obj: int, size: int
) -> tuple[float, float] | None:
    """A random object-local point on the visible part of ``obj`` (``cover``: its (S, S) coverage) or None."""
    for _ in range(_POINT_TRIES):
        uv = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6))
        if _covered_uv(cover, scene, obj, uv, size):
            return uv
    return None


def _innermost(cover: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of a covered pixel farthest from the coverage's outline (the core left by 3×3 erosions just
    before it vanishes; of the core, the pixel nearest its centroid), or None if nothing is covered."""
    core = torch.from_numpy(cover > 0.5).float()[None, None]  # (1, 1, S, S)
    if not core.any():
        return None
    while (thinner := -F.max_pool2d(-core, 3, stride=1, padding=1)).any():  # erosion; the frame is no edge
        core = thinner
    ys, xs = np.nonzero(core[0, 0].numpy())
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def _center(rng: np.random.Generator, travel: float, size: int) -> _Draw:
    """The topmost object of a 1–3-object scene moved as a whole by one handle on its flat centre."""
    scene = sc.random_scene(rng, min_objects=1, max_objects=3)
    obj = len(scene.objects) - 1
    spot = _innermost(_visible(scene, size)[obj])
    if spot is None:
        return None
    uv = sc.object_coords(scene, obj, *_to_units((float(spot[0]), float(spot[1])), size))
    theta = rng.uniform(0, 2 * math.pi)
    return scene, sc.move(scene, obj, travel * math.cos(theta), travel * math.sin(theta)), [(obj, uv)]


def _multi_object(rng: np.random.Generator, travel: float, size: int) -> _Draw:
    """Every object of a 2–3-object scene moved by a handle of its own, in directions ≥ 80° apart."""
    scene = sc.random_scene(rng, min_objects=2, max_objects=3)
    n = len(scene.objects)
    cover = _visible(scene, size)  # (N, S, S)
    theta0 = rng.uniform(0, 2 * math.pi)
    edited, picks = scene, []
    for j in range(n):
        theta = theta0 + 2 * math.pi * j / n + rng.uniform(-0.35, 0.35)  # evenly spread, ±20° jitter
        edited = sc.move(edited, j, travel * math.cos(theta), travel * math.sin(theta))
        uv = _point_on(rng, cover[j], scene, j, size)
        if uv is None:
            return None
        picks.append((j, uv))
    return scene, edited, picks


def _crossing(rng: np.random.Generator, travel: float, size: int) -> _Draw:
    """The topmost object dragged over another one, ending on top of it and partly covering it; the other
    object stays where it was (visible where the moved one leaves it uncovered)."""
    scene = sc.random_scene(rng, min_objects=2, max_objects=3)
    top = len(scene.objects) - 1
    other = int(rng.integers(top))
    o, m = scene.objects[other], scene.objects[top]
    theta = rng.uniform(0, 2 * math.pi)
    dx, dy = math.cos(theta), math.sin(theta)
    before = rng.uniform(0.55, 1.0) * travel  # most of the path lies before the other object's centre
    side = rng.uniform(-0.5, 0.5) * o.size  # the path passes this far beside that centre
    start = (o.x - before * dx - side * dy, o.y - before * dy + side * dx)
    source = sc.move(scene, top, start[0] - m.x, start[1] - m.y)
    edited = sc.move(source, top, travel * dx, travel * dy)
    covered = _hidden_share(source, other, size), _hidden_share(edited, other, size)
    if not (_COVERED[0] <= covered[1] <= _COVERED[1] and covered[1] > covered[0]):
        return None
    uv = _point_on(rng, _visible(source, size)[top], source, top, size)
    return None if uv is None else (source, edited, [(top, uv)])


def _occluded(rng: np.random.Generator, travel: float, size: int) -> _Draw:
    """An object partly hidden behind the topmost one, dragged by a visible spot towards (±90°) the front
    object: it moves behind it, since a drag does not change the draw (depth) order."""
    scene = sc.random_scene(rng, min_objects=2, max_objects=3)
    front = len(scene.objects) - 1
    back = int(rng.integers(front))
    f, b = scene.objects[front], scene.objects[back]
    phi = rng.uniform(0, 2 * math.pi)
    gap = rng.uniform(0.5, 1.0) * (f.size * max(f.sx, f.sy) + b.size * max(b.sx, b.sy))  # centre distance
    source = sc.move(scene, back, f.x + gap * math.cos(phi) - b.x, f.y + gap * math.sin(phi) - b.y)
    if not _HIDDEN[0] <= _hidden_share(source, back, size) <= _HIDDEN[1]:
        return None
    uv = _point_on(rng, _visible(source, size)[back], source, back, size)
    if uv is None:
        return None
    theta = phi + math.pi + rng.uniform(-math.pi / 2, math.pi / 2)
    return source, sc.move(source, back, travel * math.cos(theta), travel * math.sin(theta)), [(back, uv)]


_DRAWS: dict[str, Callable[[np.random.Generator, float, int], _Draw]] = {
    "center": _center,
    "multi_object": _multi_object,
    "crossing": _crossing,
    "occluded": _occluded,
}


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, or an InputError naming the bad value and the valid names."""
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in EDIT_KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        what = f"unknown kind {bad[0]!r}" if bad else f"need distinct kinds, got {list(kinds)}"
        raise InputError(f"{what}; choose from {', '.join(EDIT_KINDS)}")
    return kinds


def _plan(seed: int, index: int, kinds: tuple[str, ...]) -> tuple[str, str, bool, np.random.Generator]:
    """Kind, distance, mask and random stream of case ``index``. The kinds cycle fastest, then the distances,
    then mask or not: any 6·len(kinds) consecutive cases hold every combination once.

    A legacy kind's n-th case draws from the stream of case (its position in LEGACY_KINDS) + 4n of the
    four-kind suite, so it is that case's scene and drag; the other kinds have streams of their own.
    """
    kind = kinds[index % len(kinds)]
    cycle = index // len(kinds)
    distance = list(DISTANCES)[cycle % len(DISTANCES)]
    with_mask = (cycle // len(DISTANCES)) % 2 == 1
    if kind in LEGACY_KINDS:
        stream = [seed, LEGACY_KINDS.index(kind) + len(LEGACY_KINDS) * cycle]
    else:  # a third, non-zero word: never a legacy stream
        stream = [seed, cycle, 1 + EDIT_KINDS.index(kind)]
    return kind, distance, with_mask, np.random.default_rng(stream)


def match_radius(size: int) -> int:
    """Half-side of the neighbourhood ``gt_metrics`` locates around each handle (17×17 at 128 px)."""
    return max(3, size // 16)


def _kept_in_view(
    source: sc.Scene,
    edited: sc.Scene,
    objects: Sequence[int],
    handles: Sequence[tuple[float, float]],
    targets: Sequence[tuple[float, float]],
    size: int,
) -> bool:
    """Whether each target lies on a visible part of its object and ≥ _KEPT of the object pixels visible
    around the handle (the neighbourhood ``gt_metrics`` matches) are visible around the target too. The new
    kinds only translate objects, so equal offsets from handle and target are the same object point."""
    r = match_radius(size)
    pad = ((0, 0), (r, r), (r, r))
    before = np.pad(_visible(source, size), pad)  # (N, S+2r, S+2r)
    after = np.pad(_visible(edited, size), pad)
    for o, (hx, hy), (tx, ty) in zip(objects, handles, targets, strict=True):
        (hx, hy), (tx, ty) = (round(hx), round(hy)), (round(tx), round(ty))
        a = before[o, hy : hy + 2 * r + 1, hx : hx + 2 * r + 1]  # (k, k) around the handle
        b = after[o, ty : ty + 2 * r + 1, tx : tx + 2 * r + 1]  # (k, k) around the target
        if b[r, r] <= 0.5 or (a * b).sum() < _KEPT * a.sum():
            return False
    return True


def make_case(seed: int, index: int, size: int = GT_SIZE, kinds: Sequence[str] = EDIT_KINDS) -> GtCase:
    """Case ``index`` of the suite with this seed and kinds: kind, distance and mask cycle (``_plan``)."""
    kind, distance, with_mask, rng = _plan(seed, index, check_kinds(kinds))
    lo, hi = _MARGIN_PX, size - 1 - _MARGIN_PX
    travel = DISTANCES[distance]
    for _ in range(_TRIES):
        made = _legacy(rng, kind, travel, size) if kind in LEGACY_KINDS else _DRAWS[kind](rng, travel, size)
        if made is None:
            continue
        source, edited, picks = made
        objects = tuple(obj for obj, _ in picks)
        # handles snap to integer pixels (as a user's clicks do); targets follow those exact object points
        handles = [_snap(_to_px(sc.object_point(source, obj, *uv), size)) for obj, uv in picks]
        pairs = zip(objects, handles, strict=True)
        local = [(o, sc.object_coords(source, o, *_to_units(h, size))) for o, h in pairs]
        targets = [_to_px(sc.object_point(edited, o, *uv), size) for o, uv in local]
        if not all(lo <= c <= hi for p in handles + targets for c in p):
            continue
        if kind in LEGACY_KINDS or _kept_in_view(source, edited, objects, handles, targets, size):
            pts = tuple(handles), tuple(targets)
            return GtCase(index, kind, distance, with_mask, source, edited, objects, *pts, size)
    raise RuntimeError(f"could not place ground-truth case {index} (seed {seed}) in {_TRIES} tries")


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def render_case(
    case: GtCase, device: torch.device | str | None = None
) -> tuple[Image.Image, Image.Image, np.ndarray | None, np.ndarray]:
    """(source image, target image, user mask or None, edit region) for a case."""
    imgs = sc.render([case.source, case.target], case.size, device).cpu()  # (2, 3, S, S)
    moved = list(case.moved)
    cover = sc.render_masks([case.source, case.target], case.size, device).cpu()[:, moved]  # (2, M, S, S)
    footprint = (cover > 0.01).flatten(0, 1).any(dim=0)  # (S, S): the moved objects before or after
    q = (imgs * 255).round()  # what the PNGs hold
    changed = (q[0] - q[1]).abs().amax(dim=0) > 0  # every pixel the exact edit changes, shadows included
    region = _dilate(footprint | changed, 2).numpy()
    mask = _dilate(footprint, max(2, case.size // 16)).numpy() if case.with_mask else None
    source, target = tensor_to_pil(imgs)  # the same rounding as q
    return source, target, mask, region


def write_gt_suite(
    out_dir: str | os.PathLike[str],
    count: int = 48,
    seed: int = 0,
    size: int = GT_SIZE,
    device: torch.device | str | None = None,
    kinds: Sequence[str] = EDIT_KINDS,
) -> list[Path]:
    """Write ``count`` cases as a DragBench folder under ``out_dir``; returns the sample folders."""
    kinds = check_kinds(kinds)
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    if size < 32:
        raise InputError(f"size must be >= 32 px, got {size}")
    out = Path(out_dir)
    folders = []
    for i in range(count):
        case = make_case(seed, i, size, kinds)
        source, target, mask, region = render_case(case, device)
        ins = DragInstruction.from_pairs(
            list(zip(case.handles, (_snap(t) for t in case.targets), strict=True)),
            mask=mask,
            prompt=sc.caption(case.source),
        )
        folder = out / case.kind / f"{i:03d}-{case.distance}-{'mask' if case.with_mask else 'free'}"
        write_dragbench_sample(folder, source, ins)
        atomic_save_image(target, folder / TARGET_FILE)
        atomic_save_image(Image.fromarray(region.astype(np.uint8) * 255), folder / REGION_FILE)
        atomic_write_json(folder / GT_FILE, _gt_record(case, seed, kinds))
        folders.append(folder)
    return folders


def scene_from_dict(data: dict[str, Any]) -> sc.Scene:
    """Inverse of ``dataclasses.asdict`` for a Scene read back from ``gt.json``."""

    def tuples(d: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    return sc.Scene(
        background=sc.Background(**tuples(data["background"])),
        objects=tuple(sc.SceneObject(**tuples(o)) for o in data["objects"]),
        light=data["light"],
        spatial=data["spatial"],
    )


def _gt_record(case: GtCase, seed: int, kinds: Sequence[str]) -> dict[str, Any]:
    travel = [math.dist(h, t) for h, t in zip(case.handles, case.targets, strict=True)]
    return {
        "seed": seed,
        "index": case.index,
        "size": case.size,
        "kind": case.kind,
        "distance": case.distance,
        "travel_px": sum(travel) / len(travel),
        "with_mask": case.with_mask,
        "kinds": list(kinds),  # the suite's kind cycle: make_case(seed, index, size, kinds) rebuilds the case
        "objects": list(case.objects),  # per handle: the object it sits on
        "handles": [list(h) for h in case.handles],
        "targets": [list(t) for t in case.targets],  # exact; the instruction's targets are these rounded
        "source_scene": asdict(case.source),
        "target_scene": asdict(case.target),
    }


@torch.no_grad()
def gt_metrics(sample: DragBenchSample, edited: Image.Image, lpips: LPIPS) -> dict[str, float]:
    """Score an edit of a ground-truth sample (see the module docstring); distances in pixels."""
    if sample.target is None or sample.gt is None or sample.region is None:
        raise InputError(
            f"{sample.key} is not a ground-truth sample (needs {TARGET_FILE}, {GT_FILE}, {REGION_FILE})"
        )
    if edited.size != sample.image.size:
        edited = edited.resize(sample.image.size, Image.Resampling.BICUBIC)
    src, tgt, out = (metrics.to_tensor(im) for im in (sample.image, sample.target, edited))
    region = sample.region
    handles = torch.tensor([p.as_tuple() for p in sample.instruction.handles], dtype=torch.float32)
    exact = torch.tensor(sample.gt["targets"], dtype=torch.float32)
    radius = match_radius(min(sample.image.size))
    source_scene = scene_from_dict(sample.gt["source_scene"])
    size = sample.image.width
    objects = sample.gt.get("objects") or [sample.gt["object"]] * len(handles)  # older gt.json: one object
    cover = sc.render_masks([source_scene], size)[0, objects, None]  # (N, 1, S, S): each handle's object
    landed = metrics.template_match(src, out, handles, radius, MATCH_SCALES, weights=cover)
    return {
        "handle_error": (landed - exact).norm(dim=1).mean().item(),
        "handle_error_start": (handles - exact).norm(dim=1).mean().item(),  # what "no edit" scores
        "target_psnr_in": metrics.psnr(out, tgt, region),
        "target_lpips_in": metrics.lpips_distance(lpips, out, tgt, region),
        "keep_psnr_out": metrics.psnr(out, src, ~region),
        "keep_ssim_out": metrics.ssim(out, src, ~region),
        "keep_lpips_out": metrics.lpips_distance(lpips, out, src, ~region),
    }
