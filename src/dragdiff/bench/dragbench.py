"""DragBench on disk: a safe reader and a writer for its folder layout (SPEC §7).

Layout::

    <root>/<category>/<sample>/original_image.png  the source image
                               user_drag.png       a picture of the instruction (for people; not read back)
                               meta_data.pkl       {"prompt": str, "points": [[x, y], ...], "mask": H×W 0/1}
                               target.png, gt.json, edit_region.png   ground-truth suite only

``points`` alternate handle, target, handle, target, ... in image pixels. An all-zero mask = "no mask drawn".
``meta_data.pkl`` is a pickle, so it is read with a restricted unpickler that admits plain Python types and
numpy arrays only: any other global (a function a crafted file would call on load) is refused before it runs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from dragdiff.io import atomic_save_image, atomic_write_bytes
from dragdiff.types import DragInstruction, InputError, Point

log = logging.getLogger(__name__)

IMAGE_FILE = "original_image.png"
DRAG_FILE = "user_drag.png"
META_FILE = "meta_data.pkl"
TARGET_FILE = "target.png"
GT_FILE = "gt.json"
REGION_FILE = "edit_region.png"

# The only globals a DragBench (or LPIPS-weights) pickle needs: numpy's array, dtype and scalar reconstruction
# (and, in protocol-2 files, the latin-1 byte-string encoder).
# numpy 1.x pickles name them under ``numpy.core``, numpy 2.x under ``numpy._core``; both map to today's.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float64(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as ``_codecs.encode(str, "latin1")``; admit exactly that."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise InputError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{(mod, "_reconstruct"): _RECONSTRUCT for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _SCALAR for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise InputError(
                f"{self._source}: refusing to unpickle global '{module}.{name}' "
                "(only plain types and numpy arrays are allowed)"
            ) from None


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` admitting only plain types and numpy arrays; anything else raises InputError."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as exc:
            raise InputError(f"{path}: not a readable pickle ({exc})") from None


@dataclass(frozen=True)
class SampleRef:
    """Where one benchmark sample lives; ``key`` = ``"category/sample"`` names it in results."""

    category: str
    name: str
    path: Path

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class DragBenchSample:
    """One loaded sample: the source image, the instruction (prompt inside), the raw metadata and, for the
    ground-truth suite, the exact target image, ``gt.json`` and the (H, W) bool region the edit changes."""

    ref: SampleRef
    image: Image.Image
    instruction: DragInstruction
    meta: dict[str, Any]
    target: Image.Image | None = None
    gt: dict[str, Any] | None = None
    region: np.ndarray | None = None

    @property
    def key(self) -> str:
        return self.ref.key


def _subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def list_samples(root: str | os.PathLike[str]) -> list[SampleRef]:
    """All samples under ``root`` in sorted (category, sample) order, so every run sees the same sequence."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"benchmark folder {str(root)!r} does not exist or is not a folder")
    refs = []
    for cat in _subdirs(root):
        for sample in _subdirs(cat):
            missing = [f for f in (IMAGE_FILE, META_FILE) if not (sample / f).is_file()]
            if missing:
                raise InputError(f"DragBench sample {str(sample)!r} lacks {', '.join(missing)}")
            refs.append(SampleRef(cat.name, sample.name, sample))
    if not refs:
        raise InputError(
            f"no DragBench samples in {str(root)!r} (expected <root>/<category>/<sample>/{META_FILE})"
        )
    return refs


def _instruction_from_meta(meta: Any, where: str, width: int, height: int) -> DragInstruction:
    if not isinstance(meta, dict) or "points" not in meta:
        raise InputError(
            f"{where}: expected a dict with 'prompt', 'points', 'mask', got {type(meta).__name__}"
        )
    pts = np.asarray(meta["points"], dtype=np.float64).reshape(-1, 2)  # (2N, 2) alternating handle/target
    if len(pts) == 0 or len(pts) % 2:
        raise InputError(
            f"{where}: 'points' must alternate handle/target (an even count >= 2), got {len(pts)}"
        )
    mask = meta.get("mask")
    mask_arr = None
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.ndim == 3:  # some tools save an (H, W, 1) or RGB mask
            mask_arr = mask_arr[..., 0]
        mask_arr = mask_arr > 0
        if not mask_arr.any():  # all-zero = no mask drawn: no mask term (SPEC §1)
            mask_arr = None
    prompt = meta.get("prompt") or ""
    if not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
    instruction = DragInstruction(
        handles=tuple(Point(float(x), float(y)) for x, y in pts[0::2]),
        targets=tuple(Point(float(x), float(y)) for x, y in pts[1::2]),
        mask=mask_arr,
        prompt=prompt,
    )
    try:
        instruction.validate_for(width, height)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return instruction


def load_sample(ref: SampleRef) -> DragBenchSample:
    """Read one sample folder; a malformed one raises InputError naming the file and the problem."""
    with Image.open(ref.path / IMAGE_FILE) as im:
        image = im.convert("RGB")
    meta = safe_load_pickle(ref.path / META_FILE)
    instruction = _instruction_from_meta(meta, str(ref.path / META_FILE), *image.size)
    target = gt = region = None
    if (ref.path / TARGET_FILE).is_file():
        with Image.open(ref.path / TARGET_FILE) as im:
            target = im.convert("RGB")
    if (ref.path / GT_FILE).is_file():
        gt = json.loads((ref.path / GT_FILE).read_text())
    if (ref.path / REGION_FILE).is_file():
        with Image.open(ref.path / REGION_FILE) as im:
            region = np.asarray(im.convert("L")) > 127
    return DragBenchSample(ref, image, instruction, meta, target, gt, region)


def read_dragbench(root: str | os.PathLike[str]) -> Iterator[DragBenchSample]:
    """Load every sample under ``root`` in sorted order (lazily: one image in memory at a time)."""
    for ref in list_samples(root):
        yield load_sample(ref)


# --- writing ------------------------------------------------------------------------------------------------


def meta_for(instruction: DragInstruction, width: int, height: int, prompt: str) -> dict[str, Any]:
    """The ``meta_data.pkl`` dict DragBench uses for this instruction (all-zero mask when there is none)."""
    points = []
    for h, g in zip(instruction.handles, instruction.targets, strict=True):
        points += [[h.x, h.y], [g.x, g.y]]
    mask = (
        np.zeros((height, width), np.uint8)
        if instruction.mask is None
        else np.asarray(instruction.mask, np.uint8)
    )
    return {"prompt": prompt, "points": points, "mask": mask}


def write_dragbench_sample(
    directory: str | os.PathLike[str],
    image: Image.Image,
    instruction: DragInstruction,
    prompt: str | None = None,
) -> Path:
    """Write one sample in DragBench's layout (``user_drag.png`` drawn by ``viz.draw_instruction``).

    ``prompt`` defaults to ``instruction.prompt``. Every file is written atomically; returns the folder.
    """
    from dragdiff.viz import draw_instruction

    directory = Path(directory)
    image = image.convert("RGB")
    instruction.validate_for(*image.size)
    prompt = instruction.prompt if prompt is None else prompt
    directory.mkdir(parents=True, exist_ok=True)
    meta = meta_for(instruction, image.width, image.height, prompt)
    atomic_save_image(image, directory / IMAGE_FILE)
    atomic_save_image(draw_instruction(image, instruction), directory / DRAG_FILE)
    atomic_write_bytes(directory / META_FILE, pickle.dumps(meta, protocol=4))
    return directory
