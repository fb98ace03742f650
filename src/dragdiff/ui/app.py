"""The dragdiff web editor (Gradio): bring an image, paint what may change, click drags, run, download.

``build_app(editor_or_factory, output_dir)`` builds the page and returns a ``gr.Blocks``; nothing is
launched on import. ``serve(app, output_dir, ...)`` launches it with the safe settings: bound to 127.0.0.1,
no share tunnel, an upload size limit, and only the app's output folder allowed for file serving.

Coordinates: every point is a pixel of the ORIGINAL image, ``(x, y)``. The click view shows the image at a
display size (small images are enlarged, large ones reduced) and ``display_to_image`` maps clicks back.

One model is loaded once and kept (``ModelHolder``), shared by every browser tab; engine work (LoRA, edit,
generation) runs one call at a time under its lock. Identity-LoRA training starts in the background as soon as
an image arrives and again when the prompt or LoRA settings change (``LoraWarmer``), so the drag that follows
finds the adapter in the editor's cache.

The method menu lists every preset of ``dragdiff.config.PRESETS``. Whenever a handle/target pair is complete,
a point is undone or the mask changes, the page shows the warp-only preview (``geometry.warp.warp_preview``:
the ``warp`` method's geometry without the model) beside the click view; it runs in the light handlers, never
waiting for the engine.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dragdiff import io, viz
from dragdiff.config import PRESETS, ConfigError, EditConfig, preset
from dragdiff.geometry.support import check_handles_editable
from dragdiff.geometry.warp import warp_preview
from dragdiff.types import DragInstruction, DragResult, InputError, ProgressEvent

logger = logging.getLogger(__name__)

EditorFactory = Callable[[str | None], Any]  # model path/id (None = embedded default) -> DragEditor
_SHUTDOWN: weakref.WeakKeyDictionary[gr.Blocks, Callable[[float], None]] = weakref.WeakKeyDictionary()

DISPLAY_MIN = 512  # the click view enlarges smaller images to about this long side (nearest neighbour)
DISPLAY_MAX = 1024  # ... and reduces larger ones to this long side
UI_PREVIEW_EVERY = 10  # the UI asks for a preview every 10 iterations when the preset asks for none
UPDATE_INTERVAL_S = 0.25  # at most ~4 progress updates a second reach the page
WARM_UP_DELAY_S = 1.0  # the background LoRA restarts once the prompt/settings have been still this long
DEFAULT_MAX_FILE_SIZE = "25mb"
PREVIEW_MAX = 256  # the warp preview is computed at most this long side (benchmarks/warp_speed.py)

# One line per preset for the method menu, formatted with the preset as ``c``; a preset without a line here is
# described by its method. The menu itself lists PRESETS, whatever this holds.
PRESET_NOTES: dict[str, str] = {
    "warp": "moves the pixels exactly; the model fills only what they uncover. No LoRA, ~1 s on a CPU "
    "at 128 px",
    "warp_refine": "the warp, then the model re-paints every changed pixel from {c.warp.refine_strength:.0%} "
    "noise: smoother seams on a strong model; on the embedded model it undoes part of the move",
    "dragdiffusion": "the paper's latent optimisation: identity LoRA ({c.lora.steps} steps) + "
    "{c.drag.max_iterations} drag iterations. Slow; on a weak model the content may not follow",
    "faithful": "dragdiffusion run as the reference code structures it (no fast path): the baseline, slowest",
    "fast": "dragdiffusion with a {c.lora.steps}-step LoRA and precision {c.runtime.precision}: quicker, "
    "not the paper's recipe",
}
# The config sections each method reads: the advanced panel shows only those (plus the generation seed), and
# only a method reading "lora" gets a background identity LoRA. A method missing here is shown every field.
METHOD_SECTIONS: dict[str, tuple[str, ...]] = {
    "dragdiffusion": ("lora", "inversion", "drag", "runtime", "seed"),
    "warp": ("warp",),
}
ALWAYS_SHOWN = ("generate",)  # Generate image from prompt works with every method

# The advanced panel: (dotted EditConfig field, label). Widget defaults are read from the chosen preset.
ADVANCED: tuple[tuple[str, str], ...] = (
    ("lora.steps", "LoRA steps"),
    ("lora.lr", "LoRA learning rate"),
    ("lora.rank", "LoRA rank"),
    ("inversion.strength", "Inversion strength"),
    ("drag.max_iterations", "Drag iterations"),
    ("drag.lr", "Drag learning rate"),
    ("drag.r_m", "Motion-supervision radius r_m"),
    ("drag.r_p", "Tracking radius r_p"),
    ("drag.lam", "Mask weight λ"),
    ("runtime.preview_every", "Preview every N iterations (0 = none)"),
    ("warp.fill_steps", "Fill DDIM steps"),
    ("warp.fill_strength", "Fill strength (share of the steps re-noised)"),
    ("warp.seam_px", "Seam band repainted around the uncovered area (px; empty = by the picture's size)"),
    ("warp.keep_depth", "Moved content goes under objects in front of it"),
    ("seed", "Edit seed (identity-LoRA draws)"),
    ("generate.seed", "Generation seed"),
)


AUTO_WHEN_EMPTY = frozenset({"warp.seam_px"})  # whole numbers whose empty field means the default rule (None)

# --- pure helpers: coordinates, mask, pictures, config ------------------------------------------------------


def image_key(image: Image.Image) -> str:
    """A content hash identifying an image (same pixels -> same key, whatever the file name)."""
    rgb = image.convert("RGB")
    digest = hashlib.sha1(f"{rgb.width}x{rgb.height}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:16]


def display_scale(size: tuple[int, int]) -> float:
    """Original pixels -> click view: small images enlarged by an integer factor, big ones reduced."""
    long_side = max(size)
    if long_side < DISPLAY_MIN:
        return float(max(1, DISPLAY_MIN // long_side))
    if long_side > DISPLAY_MAX:
        return DISPLAY_MAX / long_side
    return 1.0


def display_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def display_to_image(index: Sequence[float], scale: float, size: tuple[int, int]) -> tuple[int, int]:
    """A click on display pixel ``index = (x, y)`` -> the original pixel that contains that pixel's centre."""
    w, h = size
    x = math.floor((float(index[0]) + 0.5) / scale)
    y = math.floor((float(index[1]) + 0.5) / scale)
    return (min(max(x, 0), w - 1), min(max(y, 0), h - 1))


def mask_from_editor(value: dict[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """The painted layers of an ImageEditor value -> (H, W) bool mask at ``size`` (True = may change).

    Anything painted counts (alpha > 0); erased strokes are transparent again. None when nothing is painted.
    """
    if not value:
        return None
    painted: np.ndarray | None = None
    for layer in value.get("layers") or []:
        arr = np.asarray(layer)
        if arr.ndim != 3 or arr.shape[2] != 4:
            continue
        alpha = arr[..., 3] > 0  # (H, W)
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    return _resize_mask(painted, size)  # a canvas that differs from the image is resized to it


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> (size[1], size[0]) bool, nearest neighbour."""
    if mask.shape == (size[1], size[0]):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


def editor_background(value: dict[str, Any] | None) -> Image.Image | None:
    """The ImageEditor's background as RGB (transparent pixels on white), or None."""
    if not value or value.get("background") is None:
        return None
    arr = np.asarray(value["background"])
    if arr.ndim == 2:
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if arr.shape[2] == 4:
        rgba = Image.fromarray(arr.astype(np.uint8), "RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")


def _scaled(points: Sequence[tuple[float, float]], scale: float) -> list[tuple[float, float]]:
    """Original pixel (x, y) -> display pixel centre."""
    return [((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5) for x, y in points]


def _display(image: Image.Image, scale: float) -> Image.Image:
    size = display_size(image.size, scale)
    if size == image.size:
        return image.convert("RGB")
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.convert("RGB").resize(size, resample)


def render_result(result: DragResult) -> Image.Image:
    """The result at display size with the edit's region of interest outlined (``record["roi"]``) when it
    is not the whole image: every pixel outside the outline is the input's."""
    scale = display_scale(result.source.size)
    shown = _display(result.image, scale)
    box = result.record.get("roi")
    if box is None or tuple(box) == (0, 0, *result.image.size):
        return shown
    return viz.draw_roi(shown, box, shown.width / result.image.width)


def roi_text(result: DragResult) -> str:
    """`` · edited region WxH at (x0, y0)…`` for the status line; "" when the edit ran on the whole image."""
    box = result.record.get("roi")
    if box is None or tuple(box) == (0, 0, *result.image.size):
        return ""
    x0, y0, x1, y1 = box
    return f" · edited region {x1 - x0}x{y1 - y0} at ({x0}, {y0}), outlined; outside it the input is kept"


def render_points(
    image: Image.Image, points: Sequence[tuple[float, float]], mask: np.ndarray | None
) -> Image.Image:
    """The click view: the instruction drawn DragBench-style over the image at display size.

    ``points`` alternate handle, target, ... in original pixels; an unpaired last handle is drawn alone.
    """
    scale = display_scale(image.size)
    shown = _display(image, scale)
    shown_mask = _resize_mask(mask, shown.size) if mask is not None else None
    pts = _scaled(points, scale)
    n_pairs = len(pts) // 2
    out = viz.draw_instruction(shown, pts[0 : 2 * n_pairs : 2], pts[1 : 2 * n_pairs : 2], shown_mask)
    if len(pts) % 2:  # a handle waiting for its target
        x, y = pts[-1]
        r = viz.dot_radius(out.size)
        ImageDraw.Draw(out).ellipse((x - r, y - r, x + r, y + r), fill=viz.HANDLE, outline=viz.OUTLINE)
    return out


def render_progress(
    source: Image.Image,
    instruction: DragInstruction,
    event: ProgressEvent,
) -> Image.Image:
    """The live view: the current preview (or the source) with tracked handles, at display size."""
    base = event.preview if event.preview is not None else source
    base = base.convert("RGB").resize(source.size) if base.size != source.size else base
    scale = display_scale(source.size)
    handles = _scaled([p.as_tuple() for p in instruction.handles], scale)
    targets = _scaled([p.as_tuple() for p in instruction.targets], scale)
    current = _scaled([p.as_tuple() for p in event.handles], scale) if event.handles else handles
    if len(current) != len(handles):
        current = handles
    return viz.draw_tracking(_display(base, scale), handles, targets, current)


def make_instruction(
    points: Sequence[tuple[float, float]], mask: np.ndarray | None, prompt: str, size: tuple[int, int]
) -> DragInstruction:
    """Alternating handle/target clicks -> a checked DragInstruction; InputError says what is missing."""
    if not points:
        raise InputError("click a handle point (red) and then its target (blue) on the image first")
    if len(points) % 2:
        raise InputError(f"handle {len(points) // 2 + 1} at {tuple(points[-1])} has no target yet: click one")
    pairs = [(points[i], points[i + 1]) for i in range(0, len(points), 2)]
    instruction = DragInstruction.from_pairs(pairs, mask=mask, prompt=prompt)
    instruction.validate_for(*size)
    return instruction


# --- the warp preview: the warp method's geometry, no model ------------------------------------------------

PREVIEW_NONE = "**warp preview** appears here once a handle has its target."


def render_warp_preview(
    image: Image.Image | None,
    points: Sequence[tuple[float, float]],
    mask: np.ndarray | None,
    config: EditConfig,
) -> tuple[Image.Image | None, str]:
    """The warp-only preview of the complete handle/target pairs at display size, stamped "warp preview", and
    a line about it; or None and the one-line reason there is none (no pair yet, a handle outside the mask, a
    fold). ``config`` gives the warp settings and the chosen method."""
    n = len(points) // 2
    if image is None or n == 0:
        return None, PREVIEW_NONE
    pairs = [(_xy(points[2 * i]), _xy(points[2 * i + 1])) for i in range(n)]
    try:
        instruction = DragInstruction.from_pairs(pairs, mask=mask)
        instruction.validate_for(*image.size)
        check_handles_editable(np.array([h for h, _ in pairs], np.float64), mask)  # named in image pixels
        preview = _warp_bounded(image, instruction, config)
    except InputError as exc:
        return None, f"**warp preview** not possible: {exc}"
    except Exception as exc:  # e.g. cv2.error from a degenerate segmentation: a line, not a traceback
        logger.exception("the warp preview failed")
        return None, f"**warp preview** failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
    scale = display_scale(image.size)
    if preview.size == image.size:
        shown = _display(preview, scale)
    else:  # computed smaller than the image: shown at the click view's size
        shown = preview.resize(display_size(image.size, scale), Image.Resampling.BICUBIC)
    text = f"**warp preview** of {n} drag{'s' if n > 1 else ''}: instant, no model"
    if preview.size != image.size:
        text += f", computed at {preview.width}×{preview.height}"
    if config.method == "warp":
        text += ". The edit then lets the model repaint what the move uncovered."
    else:
        text += f". The chosen method ({config.method}) does not warp: its result can differ."
    return _stamp(shown, "warp preview"), text


def _xy(point: Sequence[float]) -> tuple[float, float]:
    return (float(point[0]), float(point[1]))


def _warp_bounded(image: Image.Image, instruction: DragInstruction, config: EditConfig) -> Image.Image:
    """``warp_preview`` at most ``PREVIEW_MAX`` px long (the image and instruction scaled down for it)."""
    seam, two_point = config.warp.seam_px, config.warp.two_point
    return warp_preview(
        image,
        instruction,
        max_side=PREVIEW_MAX,
        seam=seam,
        two_point=two_point,
        keep_depth=config.warp.keep_depth,
    )


def _stamp(image: Image.Image, text: str) -> Image.Image:
    """``text`` in white on a dark band in the top-left corner, so the picture reads as a preview."""
    out = image.convert("RGB")
    size = max(12, max(out.size) // 32)
    try:
        font: Any = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(out, "RGBA")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0, 170))
    draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return out


def _get(cfg: EditConfig, dotted: str) -> Any:
    section, _, name = dotted.partition(".")
    return getattr(getattr(cfg, section), name) if name else getattr(cfg, section)


def _panel_field(key: str, label: str, value: Any, shown: bool) -> Any:
    """The advanced panel's widget for one field: a checkbox for a switch, a number box otherwise."""
    elem_id = "dd-" + key.replace(".", "-")
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label, visible=shown, elem_id=elem_id, min_width=160)
    precision = 0 if isinstance(value, int) or key in AUTO_WHEN_EMPTY else None
    return gr.Number(
        value=value, label=label, precision=precision, visible=shown, elem_id=elem_id, min_width=160
    )


def panel_values(preset_name: str) -> list[Any]:
    """The advanced panel's values for a preset, in ``ADVANCED`` order."""
    cfg = preset(preset_name)
    values = [_get(cfg, key) for key, _ in ADVANCED]
    i = [key for key, _ in ADVANCED].index("runtime.preview_every")
    values[i] = values[i] or UI_PREVIEW_EVERY
    return values


def config_from_panel(preset_name: str, values: Sequence[Any]) -> EditConfig:
    """The preset with the advanced panel's values applied; ConfigError names a bad field and value."""
    base = preset(preset_name)
    overrides: dict[str, Any] = {}
    for (key, label), value in zip(ADVANCED, values, strict=True):
        if isinstance(_get(base, key), bool):  # a checkbox
            overrides[key] = bool(value)
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            if key in AUTO_WHEN_EMPTY:
                overrides[key] = None
                continue
            raise ConfigError(f"{label} ({key}) is empty")
        number = float(value)
        if isinstance(_get(base, key), int) or key in AUTO_WHEN_EMPTY:  # a count, radius or seed
            if not number.is_integer():
                raise ConfigError(f"{label} ({key}) must be a whole number, got {value!r}")
            overrides[key] = int(number)
        else:
            overrides[key] = number
    return base.override(**overrides)


def default_preset() -> str:
    """The page's preset: the one equal to ``EditConfig()``, else the first running its method."""
    base = EditConfig()
    for matches in (lambda c: c == base, lambda c: c.method == base.method):
        for name, cfg in PRESETS.items():
            if matches(cfg):
                return name
    return next(iter(PRESETS))


def preset_note(name: str) -> str:
    """The method menu's one-line description of a preset."""
    cfg = preset(name)
    return PRESET_NOTES.get(name, f"the {cfg.method} method").format(c=cfg)


def preset_choices() -> list[tuple[str, str]]:
    """(label, preset name) for every preset, in ``PRESETS`` order."""
    return [(f"{name} — {preset_note(name)}", name) for name in PRESETS]


def _sections(method: str) -> tuple[str, ...] | None:
    return METHOD_SECTIONS.get(method)


def panel_visible(preset_name: str) -> list[bool]:
    """Which advanced fields the preset's method reads, in ``ADVANCED`` order (all, for an unknown method)."""
    sections = _sections(preset(preset_name).method)
    if sections is None:
        return [True for _ in ADVANCED]
    return [key.partition(".")[0] in (*sections, *ALWAYS_SHOWN) for key, _ in ADVANCED]


def trains_lora(config: EditConfig) -> bool:
    """Whether an edit with this config trains an identity LoRA (so one is worth training in advance)."""
    sections = _sections(config.method)
    uses = sections is None or "lora" in sections
    return uses and config.lora.enabled and config.lora.steps > 0


def _model_arg(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


# --- the model, loaded once and kept -----------------------------------------------------------------------


class ModelHolder:
    """The one loaded editor, shared by every tab; ``lock`` serialises engine calls (LoRA, edit, generate)."""

    def __init__(self, editor: Any = None, factory: EditorFactory | None = None, model: str | None = None):
        if editor is None and factory is None:
            raise ValueError("ModelHolder needs an editor or an editor factory")
        self._factory = factory
        self._editor = editor
        self._model = _model_arg(model)
        self._load_lock = threading.Lock()
        self.lock = threading.Lock()

    @property
    def model(self) -> str | None:
        return self._model

    def get(self, model: str | None) -> Any:
        """The editor for ``model`` (None or "" = the embedded default); loads only when it is a new model."""
        model = _model_arg(model)
        with self._load_lock:
            if self._editor is not None and model == self._model:
                return self._editor
            if self._factory is None:
                raise InputError(
                    f"this app serves only the model it was started with "
                    f"({self._model or 'embedded default'}), got {model!r}: "
                    "restart with `dragdiff ui --model PATH`"
                )
            logger.info("loading model %s", model or "(embedded default)")
            editor = self._factory(model)
            self._editor, self._model = editor, model
            return editor


# --- identity LoRA in the background ------------------------------------------------------------------------


@dataclass
class LoraJob:
    """Background ``prepare_lora`` for one image; the page reads ``latest`` while waiting for it."""

    key: str
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    latest: ProgressEvent | None = None
    error: str | None = None
    thread: threading.Thread | None = None


class LoraWarmer:
    """Identity-LoRA training in the background: one job per (model, image, prompt, LoRA settings, seed).

    Each tab follows one job. A new image, prompt, model or LoRA setting switches the tab to the job for the
    new key (``follow``; after ``delay`` seconds without another change, so typing a prompt starts one job,
    not one per keystroke); a job no tab follows any more is cancelled. ``job_for`` hands an edit its tab's
    job only when the keys match: an adapter for other inputs is of no use to that edit.
    """

    def __init__(self, holder: ModelHolder):
        self._holder = holder
        self._jobs: dict[str, LoraJob] = {}
        self._by_tab: dict[str, LoraJob] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._generation: dict[str, int] = {}  # bumped by follow/job_for/forget: stale timers do nothing
        self._guard = threading.Lock()

    @staticmethod
    def job_key(model: str | None, image: Image.Image, prompt: str, config: EditConfig) -> str:
        """What the adapter depends on: the model, the pixels, the prompt, the LoRA settings and the seed."""
        return f"{model}|{image_key(image)}|{prompt}|{config.lora}|seed={config.seed}"

    def follow(
        self,
        tab: str,
        model: str | None,
        image: Image.Image,
        prompt: str,
        config: EditConfig,
        delay: float = 0.0,
    ) -> None:
        """Switch ``tab`` to the job for these inputs: now, or after ``delay`` s without another call."""
        generation = self._next_generation(tab)
        args = (tab, generation, model, image.copy(), prompt, config)
        if delay <= 0:
            self._switch(*args)
            return
        timer = threading.Timer(delay, self._switch, args=args)
        timer.daemon = True
        with self._guard:
            self._timers[tab] = timer
        timer.start()

    def job_for(self, tab: str, key: str) -> LoraJob | None:
        """The tab's job if it trains ``key``; a job for other inputs (and a pending switch) is dropped."""
        self._next_generation(tab)
        with self._guard:
            job = self._by_tab.get(tab)
            if job is None or job.key == key:
                return job
            del self._by_tab[tab]
            stale = self._unfollowed(job)
        if stale is not None:
            stale.cancel.set()
        return None

    def forget(self, tab: str) -> None:
        """The tab is gone or needs no adapter now: drop its pending switch, cancel its job if unshared."""
        self._next_generation(tab)
        with self._guard:
            job = self._by_tab.pop(tab, None)
            stale = self._unfollowed(job)
            self._generation.pop(tab, None)
        if stale is not None:
            stale.cancel.set()

    def start(self, model: str | None, image: Image.Image, prompt: str, config: EditConfig) -> LoraJob | None:
        """Start (or find running) the job for these inputs; None when the edit trains no LoRA."""
        if not trains_lora(config):
            return None
        key = self.job_key(model, image, prompt, config)
        with self._guard:
            self._jobs = {k: j for k, j in self._jobs.items() if not j.done.is_set()}
            job = self._jobs.get(key)
            if job is not None and not job.cancel.is_set():
                return job  # already training; a finished one is in the editor's cache, so start() is cheap
            job = self._jobs[key] = LoraJob(key)
        thread = threading.Thread(
            target=self._run,
            args=(job, model, image.copy(), prompt, config),
            name="dragdiff-lora",
            daemon=True,
        )
        job.thread = thread
        thread.start()
        return job

    def shutdown(self, timeout: float) -> None:
        """Cancel every job and wait (up to ``timeout`` seconds in all) for their threads to end."""
        with self._guard:
            jobs = list(self._jobs.values())
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))

    def _next_generation(self, tab: str) -> int:
        with self._guard:
            timer = self._timers.pop(tab, None)
            generation = self._generation[tab] = self._generation.get(tab, 0) + 1
        if timer is not None:
            timer.cancel()
        return generation

    def _unfollowed(self, job: LoraJob | None) -> LoraJob | None:
        """``job`` when no tab follows it any more (call with the guard held)."""
        if job is None or any(j is job for j in self._by_tab.values()):
            return None
        return job

    def _switch(
        self,
        tab: str,
        generation: int,
        model: str | None,
        image: Image.Image,
        prompt: str,
        config: EditConfig,
    ) -> None:
        key = self.job_key(model, image, prompt, config)
        with self._guard:
            if self._generation.get(tab) != generation:
                return  # a later change or an edit superseded this one
            current = self._by_tab.get(tab)
            same = current is not None and current.key == key and not current.cancel.is_set()
            if same and trains_lora(config):
                return  # same inputs: keep the job (a method without LoRA drops it below)
        job = self.start(model, image, prompt, config)
        with self._guard:
            if self._generation.get(tab) != generation:  # superseded while starting: the new job is stale
                stale = self._unfollowed(job)
            else:
                previous = self._by_tab.pop(tab, None)
                if job is not None:
                    self._by_tab[tab] = job
                stale = self._unfollowed(previous) if previous is not job else None
        if stale is not None:
            stale.cancel.set()

    def _run(
        self, job: LoraJob, model: str | None, image: Image.Image, prompt: str, config: EditConfig
    ) -> None:
        lock = self._holder.lock
        try:
            editor = self._holder.get(model)
            while not lock.acquire(timeout=UPDATE_INTERVAL_S):  # an edit is running: wait, unless cancelled
                if job.cancel.is_set():
                    return
            try:
                events = editor.prepare_lora(image, prompt, config)
                try:
                    for event in events:
                        job.latest = event
                        if job.cancel.is_set():
                            break
                finally:
                    close = getattr(events, "close", None)
                    if close is not None:
                        close()
            finally:
                lock.release()
        except Exception as exc:  # reported to the page by the edit that waits for it
            logger.exception("background LoRA training failed")
            job.error = str(exc) or type(exc).__name__
        finally:
            job.done.set()


# --- live view: which progress events reach the page -------------------------------------------------------


def live_updates(
    events: Iterable[ProgressEvent],
    interval: float = UPDATE_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[ProgressEvent, Image.Image | None]]:
    """The events to send to the page, each with the latest preview to draw it on (None before the first).

    Every preview is sent: each one cost a VAE decode. Events in between go at most once per ``interval``
    and are drawn over the last preview, so the live view never falls back to the source mid-drag.
    """
    last = -math.inf
    shown: Image.Image | None = None
    for event in events:
        now = clock()
        if event.preview is not None:
            shown = event.preview
        elif now - last < interval:
            continue  # skipped, not queued
        last = now
        yield event, shown


class DragPace:
    """Seconds per drag iteration in each model's last edit: how often the next edit decodes a preview."""

    def __init__(self) -> None:
        self._seconds: dict[str | None, float] = {}

    def preview_every(self, model: str | None, requested: int, iterations: int) -> int:
        """At least ``requested`` iterations apart, no more previews than page updates, and at least one
        preview in an edit of ``iterations`` drag iterations."""
        seconds = self._seconds.get(model)
        if requested <= 0 or not seconds:
            return requested
        paced = max(requested, math.ceil(UPDATE_INTERVAL_S / seconds))
        return min(paced, max(requested, iterations))

    def observe(
        self, model: str | None, events: Iterable[ProgressEvent], clock: Callable[[], float] = time.monotonic
    ) -> Iterator[ProgressEvent]:
        """Pass ``events`` through, timing the drag iterations among them."""
        first: tuple[int, float] | None = None
        for event in events:
            if event.phase == "drag":
                now = clock()
                if first is None:
                    first = (event.step, now)
                elif event.step > first[0]:
                    self._seconds[model] = (now - first[1]) / (event.step - first[0])
            yield event


# --- per-tab state and outputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """The picture one browser tab is editing (its clicked points live in a State of their own).

    ``generated`` holds the GeneratedImage of generated-image mode: the drag then skips LoRA and inversion.
    """

    image: Image.Image | None = None
    key: str | None = None
    generated: Any = None
    mask: np.ndarray | None = None


def _status(event: ProgressEvent, waiting: str = "") -> str:
    text = f"**{waiting}{event.phase}** {event.step}/{event.total}"
    if event.loss is not None:
        text += f" · loss {event.loss:.4f}"
    if event.message:
        text += f" · {event.message}"
    return text


def _points_text(points: Sequence[tuple[int, int]]) -> str:
    if not points:
        return "No points yet: click a handle (red), then its target (blue)."
    pairs = [f"({points[i][0]}, {points[i][1]}) → " for i in range(0, len(points), 2)]
    for j in range(1, len(points), 2):
        pairs[j // 2] += f"({points[j][0]}, {points[j][1]})"
    if len(points) % 2:
        pairs[-1] += "… click its target"
    return "Drags in image pixels: " + "; ".join(pairs)


def save_outputs(result: DragResult, folder: Path) -> tuple[list[Path], dict[str, Any]]:
    """Write the edited image, JSON record, animation, input and instruction picture atomically to ``folder``.

    Returns the files and the record as written: the engine's record plus the names of the files beside it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "image": folder / "edited.png",
        "record": folder / "record.json",
        "gif": folder / "drag.gif",
        "input": folder / "input.png",
        "instruction": folder / "user_drag.png",
    }
    io.atomic_save_image(result.image, paths["image"])
    record = {**result.record, "files": {name: path.name for name, path in paths.items()}}
    io.atomic_write_json(paths["record"], record)
    io.save_animation(_animation(result), paths["gif"], fps=6)
    io.atomic_save_image(result.source, paths["input"])
    io.atomic_save_image(viz.draw_instruction(result.source, result.instruction), paths["instruction"])
    return [paths["image"], paths["record"], paths["gif"], paths["input"], paths["instruction"]], record


def _animation(result: DragResult) -> list[Image.Image]:
    """Tracking frames when the engine recorded them, bracketed by the instruction and the result."""
    ins = result.instruction
    first = viz.draw_instruction(result.source, ins)
    last = viz.draw_tracking(result.image, ins.handles, ins.targets, result.final_handles or ins.handles)
    frames = [f.resize(result.source.size) if f.size != result.source.size else f for f in result.frames]
    return [first, *frames, last, result.image.convert("RGB")]


def _as_user_error(exc: Exception) -> gr.Error:
    """Every failure reaches the page as a one-line message; unexpected ones are also logged in full."""
    if isinstance(exc, ValueError | FileNotFoundError):
        return gr.Error(str(exc))
    logger.exception("the web editor hit an unexpected error")
    return gr.Error(f"{type(exc).__name__}: {exc}")


# --- the page -----------------------------------------------------------------------------------------------


def build_app(
    editor: Any,
    *,
    output_dir: str | Path,
    model: str | None = None,
    preloaded: Any = None,
    title: str = "dragdiff",
) -> gr.Blocks:
    """Build the web editor around a DragEditor, or a factory ``model -> DragEditor`` (loaded on first use).

    ``model`` is the model the page starts with (None = the embedded default); with a factory, ``preloaded``
    may be the editor already loaded for ``model``. Edits write their files into ``output_dir``. Launch with
    ``serve``; building never starts a server.
    """
    if hasattr(editor, "iter_edit"):
        holder = ModelHolder(editor=editor, model=model)
    elif callable(editor):
        holder = ModelHolder(editor=preloaded, factory=editor, model=model)
    else:
        raise TypeError(
            f"build_app needs a DragEditor or a factory returning one, got {type(editor).__name__}"
        )
    out_root = Path(output_dir).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    warmer = LoraWarmer(holder)
    pace = DragPace()
    stops: dict[str, threading.Event] = {}

    def tab(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "default"

    # -- handlers --------------------------------------------------------------------------------------------

    def on_editor_change(request: gr.Request, value, session: Session, points, model, prompt, preset, *panel):
        # gr.Request comes first: Gradio injects it by position, which *panel would otherwise swallow
        image = editor_background(value)
        if image is None:  # the editor reports an upload before its image has arrived: wait for it
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        mask = mask_from_editor(value, image.size)
        key = image_key(image)
        if key == session.key:  # the same picture: a mask stroke (or the generated image arriving)
            session = replace(session, mask=mask)
            return session, gr.skip(), render_points(image, points, mask), _points_text(points)
        # a new picture: forget the points, start its identity LoRA
        session = Session(image=image, key=key, mask=mask)
        _warm_up(session, model, prompt, preset, panel, request, delay=0.0, warn=True)
        return session, (), render_points(image, (), mask), _points_text(())

    def on_settings(request: gr.Request, session: Session, model, prompt, preset, *panel):
        """Prompt, model or settings changed: the background LoRA follows once they stay put for a moment."""
        _warm_up(session, model, prompt, preset, panel, request, delay=WARM_UP_DELAY_S, warn=False)

    def _warm_up(session: Session, model_text, prompt, preset_name, panel, request, delay, warn) -> None:
        if session.image is None or session.generated is not None:  # generated-image mode trains no LoRA
            return
        try:
            config = config_from_panel(preset_name, panel)
        except ValueError as exc:
            if warn:  # while a number is being typed, a half-typed value is no news; Run reports it
                gr.Warning(f"identity LoRA not started: {exc}")
            return
        warmer.follow(tab(request), _model_arg(model_text), session.image, prompt or "", config, delay=delay)

    def on_clear(request: gr.Request):
        warmer.forget(tab(request))
        return Session(), (), None, _points_text(())

    def on_click(session: Session, points, evt: gr.SelectData):
        if session.image is None or evt.index is None:
            raise gr.Error("upload or generate an image first")
        point = display_to_image(evt.index, display_scale(session.image.size), session.image.size)
        points = (*points, point)
        return points, render_points(session.image, points, session.mask), _points_text(points)

    def on_points(session: Session, points, how: str):
        points = tuple(points[:-1]) if how == "undo" else ()
        view = render_points(session.image, points, session.mask) if session.image is not None else None
        return points, view, _points_text(points)

    def on_preset(preset_name):
        """A new preset: its values in the advanced panel, showing the fields its method reads."""
        try:
            values, shown = panel_values(preset_name), panel_visible(preset_name)
        except ValueError as exc:
            raise _as_user_error(exc) from None
        return [gr.update(value=v, visible=b) for v, b in zip(values, shown, strict=True)]

    def on_preview(session: Session, points, preset_name, *panel):
        """The warp preview of the tab's image, pairs and mask (light: it never waits for the engine)."""
        try:
            config = config_from_panel(preset_name, panel)
        except ValueError:  # a half-typed setting (Run reports it): preview with the preset's warp settings
            config = PRESETS.get(preset_name, EditConfig())
        return render_warp_preview(session.image, points, session.mask, config)

    def on_generate(prompt, model_text, preset_name, *panel):
        try:
            config = config_from_panel(preset_name, panel)
            if not (prompt or "").strip():
                raise InputError("type a prompt to generate an image from")
            editor_ = holder.get(_model_arg(model_text))
            with holder.lock:
                generated = editor_.generate(prompt, config)
        except Exception as exc:
            raise _as_user_error(exc) from None
        image = generated.image.convert("RGB")
        session = Session(image=image, key=image_key(image), generated=generated)
        value = {"background": np.asarray(image), "layers": [], "composite": None}
        return session, (), value, render_points(image, (), None), _points_text(())

    def on_stop(request: gr.Request):
        event = stops.get(tab(request))
        if event is not None and not event.is_set():
            event.set()
            gr.Info("Stopping after the current step…")

    def on_tab_closed(request: gr.Request):
        """A closed tab's background LoRA and running edit are of no use to anyone: end them."""
        warmer.forget(tab(request))
        stop = stops.pop(tab(request), None)
        if stop is not None:
            stop.set()

    def on_run(request: gr.Request, session: Session, points, value, prompt, model_text, preset_name, *panel):
        try:
            yield from _run(session, points, value, prompt or "", model_text, preset_name, panel, request)
        except gr.Error:
            raise
        except Exception as exc:
            raise _as_user_error(exc) from None

    def _run(session: Session, points, value, prompt, model_text, preset_name, panel, request):
        skip3 = (gr.skip(), gr.skip(), gr.skip())
        # 1. Check the inputs before touching the model.
        if session.image is None:
            raise InputError("upload an image or generate one first")
        source = session.image
        instruction = make_instruction(points, mask_from_editor(value, source.size), prompt, source.size)
        config = config_from_panel(preset_name, panel)
        model = _model_arg(model_text)
        editor_ = holder.get(model)
        stop = stops[tab(request)] = threading.Event()
        # 2. A real image: let its background LoRA finish first, showing its progress, if it is this edit's
        #    adapter (same model, image, prompt, LoRA settings and seed); one for other inputs is cancelled.
        #    A method without LoRA cancels the tab's training: it would only hold up the engine.
        job = None
        if not trains_lora(config):
            warmer.forget(tab(request))
        elif session.generated is None:
            job = warmer.job_for(tab(request), warmer.job_key(model, source, prompt, config))
        while job is not None and not job.done.wait(UPDATE_INTERVAL_S) and not stop.is_set():
            if job.latest is not None:
                yield _status(job.latest, "identity LoRA (background) · "), gr.skip(), *skip3
        # 3. Take the engine (another tab's edit may hold it).
        while not holder.lock.acquire(timeout=UPDATE_INTERVAL_S):
            if stop.is_set():
                yield "**stopped** before the edit started", gr.skip(), *skip3
                return
            yield "**waiting** for another edit on this model to finish…", gr.skip(), *skip3
        try:
            every = pace.preview_every(model, config.runtime.preview_every, config.drag.max_iterations)
            config = config.override(**{"runtime.preview_every": every})
            image_arg = session.generated if session.generated is not None else source
            run = editor_.iter_edit(image_arg, instruction, config=config, stop=stop)
            for event, preview in live_updates(pace.observe(model, run)):
                shown = replace(event, preview=preview)
                yield _status(event), render_progress(source, instruction, shown), *skip3
            result = run.result
        finally:
            holder.lock.release()
        if not isinstance(result, DragResult):
            raise RuntimeError(f"the edit ended without a DragResult (got {type(result).__name__})")
        # 4. Write the files; show the result beside the input.
        folder = out_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        files, record = save_outputs(result, folder)
        text = f"**done** · {config.method}"
        if "drag" in (_sections(config.method) or ("drag",)):  # a method that optimises: how long it did
            text += f" · {result.iterations} iterations"
        text += " · stopped early" if result.stopped else ""
        text += roi_text(result)
        last_event = ProgressEvent("done", 1, 1, handles=result.final_handles, preview=result.image)
        yield (
            text,
            render_progress(source, instruction, last_event),
            render_result(result),
            [str(p) for p in files],
            record,
        )

    # -- layout ----------------------------------------------------------------------------------------------

    start_preset = default_preset()
    defaults = panel_values(start_preset)
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        session = gr.State(Session())
        points = gr.State(())
        gr.Markdown(
            "## dragdiff — drag to edit\n"
            "1. **Upload** an image, or type a prompt and generate one. "
            "2. **Paint** where the image may change (optional; unpainted = no mask term). "
            "3. **Click** a handle (red), then its target (blue); repeat for more drags. The warp preview "
            "shows at once where the content goes. "
            "4. **Choose a method and run**. Points are stored in the original image's pixels, whatever the "
            "display size."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                editor_in = gr.ImageEditor(
                    label="1 · Image and editable mask (paint)",
                    type="numpy",
                    image_mode="RGBA",
                    sources=["upload", "clipboard"],
                    transforms=(),
                    layers=False,
                    format="png",
                    brush=gr.Brush(
                        colors=["rgba(255,255,255,0.55)"], color_mode="fixed", default_size="auto"
                    ),
                    eraser=gr.Eraser(default_size="auto"),
                    height=420,
                    elem_id="dd-editor",
                )
            with gr.Column(scale=1, min_width=280):
                points_view = gr.Image(
                    label="2 · Click handle (red), then target (blue)",
                    type="pil",
                    interactive=False,
                    height=420,
                    buttons=["fullscreen"],
                    elem_id="dd-points",
                )
                points_text = gr.Markdown(_points_text(()), elem_id="dd-points-text")
                with gr.Row():
                    undo_btn = gr.Button("Undo last point", size="sm", elem_id="dd-undo")
                    clear_btn = gr.Button("Clear points", size="sm", elem_id="dd-clear")
            with gr.Column(scale=1, min_width=280):
                preview_view = gr.Image(
                    label="3 · Warp preview (instant, no model)",
                    type="pil",
                    format="png",
                    interactive=False,
                    height=420,
                    buttons=["fullscreen"],
                    elem_id="dd-warp-preview",
                )
                preview_text = gr.Markdown(PREVIEW_NONE, elem_id="dd-warp-preview-text")
            with gr.Column(scale=1, min_width=280):
                live_view = gr.Image(
                    label="4 · Live edit (tracked handles)",
                    type="pil",
                    interactive=False,
                    height=420,
                    buttons=["fullscreen"],
                    elem_id="dd-live",
                )
                status = gr.Markdown("", elem_id="dd-status")
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt",
                placeholder="describe the image (optional for a drag)",
                scale=3,
                elem_id="dd-prompt",
            )
            model_box = gr.Textbox(
                label="Model",
                value=holder.model or "",
                placeholder="embedded default — or a local diffusers folder / .safetensors file",
                scale=2,
                elem_id="dd-model",
            )
        preset_box = gr.Radio(
            choices=preset_choices(),
            value=start_preset,
            label="Method (preset)",
            elem_id="dd-preset",
        )
        with gr.Row():
            generate_btn = gr.Button("Generate image from prompt", elem_id="dd-generate")
            run_btn = gr.Button("Run drag", variant="primary", elem_id="dd-run")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="dd-stop")
        with gr.Accordion("Advanced settings", open=False):
            with gr.Row():
                panel = [
                    _panel_field(key, label, value, shown)
                    for (key, label), value, shown in zip(
                        ADVANCED, defaults, panel_visible(start_preset), strict=True
                    )
                ]
        with gr.Row(equal_height=False):
            result_view = gr.Image(
                label="Result (the amber outline: the region the edit ran on; full-size files on the right)",
                type="pil",
                interactive=False,
                buttons=["fullscreen"],
                elem_id="dd-result",
            )
            with gr.Column():
                files = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="dd-files"
                )
                record = gr.JSON(label="Record", elem_id="dd-record")

        # -- wiring: light handlers never wait in the queue; engine work runs one call at a time -------------
        light: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}
        canvas = [session, points, points_view, points_text]
        settings = [model_box, prompt, preset_box, *panel]
        editor_inputs = [editor_in, session, points, *settings]
        # the warp preview follows every change of the picture, points, mask or warp settings
        preview: dict[str, Any] = {
            "fn": on_preview,
            "inputs": [session, points, preset_box, *panel],
            "outputs": [preview_view, preview_text],
            "trigger_mode": "always_last",
            **light,
        }
        for listen in (
            editor_in.upload,
            editor_in.change,
        ):  # a new picture comes by upload; strokes by change
            listen(on_editor_change, editor_inputs, canvas, trigger_mode="always_last", **light).success(
                **preview
            )
        editor_in.clear(on_clear, None, canvas, **light).success(**preview)
        gr.on(  # the background LoRA follows the prompt, model and settings (debounced in LoraWarmer)
            [model_box.change, prompt.change, preset_box.change, *(n.change for n in panel)],
            on_settings,
            [session, *settings],
            None,
            trigger_mode="always_last",
            **light,
        )
        points_view.select(on_click, [session, points], canvas[1:], **light).success(**preview)
        undo_btn.click(lambda s, p: on_points(s, p, "undo"), [session, points], canvas[1:], **light).success(
            **preview
        )
        clear_btn.click(
            lambda s, p: on_points(s, p, "clear"), [session, points], canvas[1:], **light
        ).success(**preview)
        preset_box.change(on_preset, [preset_box], panel, **light)
        warp_fields = [n for (key, _), n in zip(ADVANCED, panel, strict=True) if key.startswith("warp.")]
        gr.on([preset_box.change, *(n.change for n in warp_fields)], **preview)
        generate_btn.click(
            on_generate,
            [prompt, model_box, preset_box, *panel],
            [session, points, editor_in, points_view, points_text],
            concurrency_id="engine",
            concurrency_limit=1,
        ).success(**preview)
        run_btn.click(
            on_run,
            [session, points, editor_in, prompt, model_box, preset_box, *panel],
            [status, live_view, result_view, files, record],
            concurrency_id="engine",
            concurrency_limit=1,
            show_progress="minimal",
        )
        stop_btn.click(on_stop, None, None, **light)
        app.unload(on_tab_closed)

    def shutdown(timeout: float) -> None:
        for event in list(stops.values()):
            event.set()
        warmer.shutdown(timeout)

    _SHUTDOWN[app] = shutdown
    return app


def close(app: gr.Blocks, timeout: float = 30.0) -> None:
    """Stop the app's server, running edits and background LoRA training (waits up to ``timeout`` s)."""
    shutdown = _SHUTDOWN.pop(app, None)
    if shutdown is not None:
        shutdown(timeout)
    app.close()


def serve(
    app: gr.Blocks,
    *,
    output_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
) -> str:
    """Launch the app: local bind unless ``host`` says otherwise, no tunnel unless ``share``; returns its URL.

    Only ``output_dir`` (and Gradio's own upload cache) is served; bigger uploads than ``max_file_size`` fail.
    """
    app.queue(default_concurrency_limit=1)
    _, local_url, share_url = app.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(Path(output_dir).resolve())],
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        show_error=True,
        inbrowser=False,
        ssr_mode=False,
        mcp_server=False,
        quiet=True,  # the caller says where the app is (Gradio's banner suggests editing launch())
    )
    return share_url or local_url
