"""``warp``: move the content explicitly; the model paints only what it uncovered (after Inpaint4Drag).

No identity LoRA and no optimisation: the geometry is right by construction and the model no longer has to
carry the content, so the method works on a weak model too. Steps:

    1. plan      segment the dragged parts, fit each its own deformation, map back (``geometry.warp``)
    2. plate     the background with the moved parts removed, filled classically (OpenCV Telea)
    3. composite the moved parts over the plate, from the source's own pixels (no round trip)
    4. fill      the uncovered pixels (+ a seam band) repainted by the model: blended-latent denoising from a
                 partial DDIM inversion at the model's work size, empty prompt (``diffusion.fill``); with
                 ``warp.fill="auto"`` (the default) only the holes whose surroundings are textured — where the
                 surroundings are smooth, step 2's smooth fill is kept (it is what a smooth background hides)
    5. paste     the model's pixels inside the hole only, with a feathered edge; every other pixel is the
                 composite's, and everything outside ``plan.changed`` is the source bit for bit
    6. refine    optional (``warp.refine_strength`` > 0, preset ``warp_refine``): the same blended denoising
                 over every changed pixel at a low strength, so the model harmonises what the warp placed
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from dragdiff.config import EditConfig, WarpConfig
from dragdiff.diffusion.context import EditContext
from dragdiff.diffusion.fill import FillSettings, blended_fill, paste_hole
from dragdiff.diffusion.graphs import GraphedForward
from dragdiff.diffusion.inversion import image_to_tensor, tensor_to_pil
from dragdiff.geometry.support import disc
from dragdiff.geometry.texture import shift_fill
from dragdiff.geometry.warp import WarpPlan, auto_seam, background_plate, composite, plan_warp
from dragdiff.methods.base import DragOutcome
from dragdiff.types import DragInstruction, ProgressEvent

__all__ = ["run"]


def run(
    ctx: EditContext, instruction: DragInstruction, config: EditConfig, stop: threading.Event
) -> Generator[ProgressEvent, None, DragOutcome]:
    settings = config.warp
    source = np.asarray(ctx.prep.source.convert("RGB"))  # (H, W, 3) uint8
    seam = auto_seam(source.shape[:2]) if settings.seam_px is None else settings.seam_px
    plan = plan_warp(
        source, instruction, seam=seam, two_point=settings.two_point, keep_depth=settings.keep_depth
    )  # 1
    moved = composite(source, background_plate(source, plan), plan)  # 2, 3
    ctx.clock.lap("warp")
    yield ProgressEvent(phase="warp", step=1, total=1)
    hole = _model_hole(source, plan, settings.fill)
    if settings.fill == "auto" and plan.hole.any():  # a repeating texture: copied from a period away instead
        stays = ~plan.changed & ~plan.front
        moved, copied = shift_fill(moved, hole, stays)
        # a faint pattern the texture test calls smooth (low-contrast checks): copied only where it repeats
        # almost exactly, else Telea's fill stays
        moved, _ = shift_fill(moved, plan.hole & ~hole, stays, FAINT_RMS, FAINT_PATTERN_STD)
        hole &= ~copied
    if hole.any() and not stop.is_set():
        wrap = GraphedForward if ctx.graphed else None  # CUDA graphs for the fill's fixed-shape UNet calls
        with torch.no_grad():
            fill = _model_fill(ctx.pipe, moved, hole, settings, ctx.prep.work_hw, ctx.amp, wrap)
            moved = yield from fill  # 4, 5
    ctx.clock.lap("fill")
    if settings.refine_strength > 0 and not stop.is_set():
        region = _dilate(plan.changed, seam) & ~plan.front  # objects in front stay as they are
        refine = replace(settings, fill_strength=settings.refine_strength)
        wrap = GraphedForward if ctx.graphed else None
        with torch.no_grad():
            moved = yield from _model_fill(
                ctx.pipe, moved, region, refine, ctx.prep.work_hw, ctx.amp, wrap
            )  # 6
        ctx.clock.lap("refine")
    return DragOutcome(
        image=Image.fromarray(moved),
        initial_handles=instruction.handles,
        final_handles=instruction.targets,  # the warp puts each handle's content at its target exactly
        record={
            "moved_parts": int(plan.labels.max()),
            "uncovered_pixels": int(plan.hole.sum()),
            "model_filled_pixels": int(hole.sum()),
        },
    )


FAINT_RMS, FAINT_PATTERN_STD = 4.0, 16.0  # a smooth-judged hole is copied if its ring varies this much (std)
# and a copy matches the ring this well (RMS, grey levels)
TEXTURED = 12.0  # median |Laplacian| (grey levels, 3×3) of a hole's surroundings above which it is texture;
# smooth gradients and flat colour measure 0–10, photographs' and fractal textures 60–90 (docs/methods.md)


def _model_hole(source: np.ndarray, plan: WarpPlan, mode: str) -> np.ndarray:
    """The uncovered pixels the model repaints: all (``"model"``), none (``"classical"``), or (``"auto"``) the
    holes whose ring of background that stays is textured. The median ignores the few edges of other objects
    the ring crosses; a texture fills all of it."""
    if mode != "auto" or not plan.hole.any():
        return plan.hole if mode == "model" else np.zeros_like(plan.hole)
    grey = source.astype(np.float32).mean(-1)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    stays = ~plan.hole & (plan.labels == 0) & (plan.landed == 0)
    n, comp = cv2.connectedComponents(plan.hole.astype(np.uint8))
    out = np.zeros_like(plan.hole)
    for i in range(1, n):
        piece = comp == i
        ring = (cv2.dilate(piece.astype(np.uint8), disc(3)) > 0) & stays
        if ring.sum() >= 8 and float(np.median(lap[ring])) > TEXTURED:
            out |= piece
    return out


def _model_fill(
    pipe: Any,
    picture: np.ndarray,
    hole: np.ndarray,
    settings: WarpConfig,
    work_hw: tuple[int, int],
    amp: torch.dtype | None,
    eps_wrap: Any,
) -> Generator[ProgressEvent, None, np.ndarray]:
    """Steps 4–5: the model's repaint of ``hole`` at work size, resized back and pasted inside the hole."""
    h, w = picture.shape[:2]
    wh, ww = work_hw
    small = Image.fromarray(picture).resize((ww, wh), Image.Resampling.BICUBIC)
    small_hole = (
        np.asarray(Image.fromarray(hole.astype(np.uint8) * 255).resize((ww, wh), Image.Resampling.BILINEAR))
        > 0
    )
    device = pipe.unet.device
    pixels = image_to_tensor(small).to(device)
    fill = FillSettings(settings.fill_steps, settings.fill_strength, settings.fill_prompt)
    total = max(1, round(fill.strength * fill.num_steps)) * 2
    run = blended_fill(pipe, pixels, torch.from_numpy(small_hole), fill, amp, eps_wrap)
    while True:
        try:
            step = next(run)
        except StopIteration as done:
            out = done.value
            break
        yield ProgressEvent(phase="fill", step=step, total=total)
    generated = tensor_to_pil(out)[0]
    if generated.size != (w, h):
        generated = generated.resize((w, h), Image.Resampling.BICUBIC)
    return paste_hole(picture, np.asarray(generated), hole, settings.feather_px)


def _dilate(region: np.ndarray, px: int) -> np.ndarray:
    return region if px <= 0 else cv2.dilate(region.astype(np.uint8), disc(px)) > 0
