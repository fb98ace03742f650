"""A ground-truth drag suite: procedural scenes where the exact result of every drag is known.

Each case takes a random scene (``dragdiff.model.scenes``), picks its topmost object and edits it — a move
(one or two handles), a stretch along one of its axes (two handles on opposite sides) or a resize (two
handles on a diagonal) — so that the handles travel a set distance ("near" / "mid" / "far"). Handles sit on
the object; their targets are where those object-fixed points land in the edited scene (``object_point``),
and the edited scene's render is the exact target image. Half of the cases carry an editable-region mask
(the object's before/after footprint, generously dilated, as a user would paint it).

On disk it is a DragBench folder (category = edit kind) with three extra files per sample: ``target.png``,
``edit_region.png`` (pixels the exact edit changes, slightly dilated) and ``gt.json`` (exact float targets,
both scenes, the case parameters). Case ``i`` depends only on (seed, i): a larger ``count`` extends a suite.

Scores (``gt_metrics``): how far the dragged content landed from the exact target (template matching of each
handle's source neighbourhood in the edit), fidelity to the exact target inside the edited region, and
preservation of the source outside it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
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
EDIT_KINDS = ("move", "move_multi", "stretch", "resize")
DISTANCES = {"near": 0.08, "mid": 0.16, "far": 0.26}  # handle travel, as a fraction of the image side
_MARGIN_PX = 2  # handles and targets stay this far inside the frame
_TRIES = 64
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
    obj: int
    handles: tuple[tuple[float, float], ...]  # integer pixels
    targets: tuple[tuple[float, float], ...]  # exact (float) pixels where the handles' object points land
    size: int


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


def _edit(rng: np.random.Generator, kind: str, scene: sc.Scene, obj: int, travel: float, size: int) -> _Edit:
    """(edited scene, handle object-local points) for one edit kind, or None if this draw does not fit."""
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


def make_case(seed: int, index: int, size: int = GT_SIZE) -> GtCase:
    """Case ``index`` of the suite with this seed: kind, distance and mask cycle through every combination."""
    kind = EDIT_KINDS[index % len(EDIT_KINDS)]
    distance = list(DISTANCES)[(index // len(EDIT_KINDS)) % len(DISTANCES)]
    with_mask = (index // (len(EDIT_KINDS) * len(DISTANCES))) % 2 == 1
    rng = np.random.default_rng([seed, index])
    lo, hi = _MARGIN_PX, size - 1 - _MARGIN_PX
    for _ in range(_TRIES):
        scene = sc.random_scene(rng, min_objects=1, max_objects=3)
        obj = len(scene.objects) - 1  # the topmost object: its handles are visible
        made = _edit(rng, kind, scene, obj, DISTANCES[distance], size)
        if made is None:
            continue
        edited, uvs = made
        # handles snap to integer pixels (as a user's clicks do); targets follow those exact object points
        handles = [_snap(_to_px(sc.object_point(scene, obj, *uv), size)) for uv in uvs]
        local = [sc.object_coords(scene, obj, *_to_units(h, size)) for h in handles]
        targets = [_to_px(sc.object_point(edited, obj, *uv), size) for uv in local]
        if all(lo <= c <= hi for p in handles + targets for c in p):
            return GtCase(
                index, kind, distance, with_mask, scene, edited, obj, tuple(handles), tuple(targets), size
            )
    raise RuntimeError(f"could not place ground-truth case {index} (seed {seed}) in {_TRIES} tries")


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def render_case(
    case: GtCase, device: torch.device | str | None = None
) -> tuple[Image.Image, Image.Image, np.ndarray | None, np.ndarray]:
    """(source image, target image, user mask or None, edit region) for a case."""
    imgs = sc.render([case.source, case.target], case.size, device).cpu()  # (2, 3, S, S)
    cover = sc.render_masks([case.source, case.target], case.size, device).cpu()[:, case.obj]  # (2, S, S)
    footprint = (cover > 0.01).any(dim=0)  # (S, S): the object before or after
    q = (imgs * 255).round()  # what the PNGs hold
    changed = (q[0] - q[1]).abs().amax(dim=0) > 0  # every pixel the exact edit changes, shadows included
    region = _dilate(footprint | changed, 2).numpy()
    mask = _dilate(footprint, max(2, case.size // 16)).numpy() if case.with_mask else None
    source, target = tensor_to_pil(imgs)  # the same rounding as q
    return source, target, mask, region


def write_gt_suite(
    out_dir: str | os.PathLike[str],
    count: int = 24,
    seed: int = 0,
    size: int = GT_SIZE,
    device: torch.device | str | None = None,
) -> list[Path]:
    """Write ``count`` cases as a DragBench folder under ``out_dir``; returns the sample folders."""
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    if size < 32:
        raise InputError(f"size must be >= 32 px, got {size}")
    out = Path(out_dir)
    folders = []
    for i in range(count):
        case = make_case(seed, i, size)
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
        atomic_write_json(folder / GT_FILE, _gt_record(case, seed))
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


def _gt_record(case: GtCase, seed: int) -> dict[str, Any]:
    travel = [math.dist(h, t) for h, t in zip(case.handles, case.targets, strict=True)]
    return {
        "seed": seed,
        "index": case.index,
        "size": case.size,
        "kind": case.kind,
        "distance": case.distance,
        "travel_px": sum(travel) / len(travel),
        "with_mask": case.with_mask,
        "object": case.obj,
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
    radius = max(3, min(sample.image.size) // 16)
    source_scene = scene_from_dict(sample.gt["source_scene"])
    size = sample.image.width
    cover = sc.render_masks([source_scene], size)[:, sample.gt["object"], None]  # (1, 1, S, S)
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
