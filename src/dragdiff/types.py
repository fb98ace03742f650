"""The values that cross dragdiff's boundaries: points, drag instructions, progress events and results.

Coordinates are always image pixels of the user's image, (x, y), x to the right and y down.
No torch here: frontends and the benchmark build these without touching the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


class InputError(ValueError):
    """Bad user input; the message names the problem and the offending value."""


@dataclass(frozen=True)
class Point:
    x: float
    y: float

    def as_tuple(self) -> tuple[float, float]:
        return (self.x, self.y)

    @classmethod
    def parse(cls, text: str) -> Point:
        """Parse ``"X,Y"``; raises InputError naming the text otherwise."""
        parts = text.strip().split(",")
        if len(parts) != 2:
            raise InputError(f"a point must be 'X,Y', got {text!r}")
        try:
            return cls(float(parts[0]), float(parts[1]))
        except ValueError:
            raise InputError(f"a point must be two numbers 'X,Y', got {text!r}") from None


@dataclass(frozen=True)
class DragInstruction:
    """What the user asked for: handle -> target pairs, an optional editable mask, a prompt.

    ``mask`` is an (H, W) bool array in image pixels, True where the image may change; None = no mask term.
    """

    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    mask: np.ndarray | None = None
    prompt: str = ""

    def __post_init__(self) -> None:
        if len(self.handles) == 0:
            raise InputError("a drag needs at least one handle->target pair, got none")
        if len(self.handles) != len(self.targets):
            raise InputError(
                f"handles and targets must pair up, got {len(self.handles)} handles and "
                f"{len(self.targets)} targets"
            )

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]],
        mask: np.ndarray | None = None,
        prompt: str = "",
    ) -> DragInstruction:
        return cls(
            handles=tuple(Point(*h) for h, _ in pairs),
            targets=tuple(Point(*g) for _, g in pairs),
            mask=mask,
            prompt=prompt,
        )

    def validate_for(self, width: int, height: int) -> None:
        """Check points and mask against an image of this size; raise InputError naming the bad value."""
        if min(width, height) < MIN_IMAGE_SIDE:
            raise InputError(
                f"the image is {width}x{height} px; a drag edit needs at least {MIN_IMAGE_SIDE} px "
                "on each side"
            )
        for kind, pts in (("handle", self.handles), ("target", self.targets)):
            for i, p in enumerate(pts):
                if not (0 <= p.x <= width - 1 and 0 <= p.y <= height - 1):
                    raise InputError(
                        f"{kind} {i + 1} at ({p.x:g}, {p.y:g}) is outside the {width}x{height} image"
                    )
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.ndim != 2 or m.shape != (height, width):
                raise InputError(f"mask is {_shape(m)} but the image is {width}x{height} (W x H)")
            self._check_handles_in(m.astype(bool))

    def _check_handles_in(self, mask: np.ndarray) -> None:
        """A handle outside the editable mask can move nothing: an error naming it, before any work.
        A handle within ``HANDLE_SLACK_PX`` of the mask counts as inside (a click on a painted edge)."""
        h, w = mask.shape
        r = HANDLE_SLACK_PX
        for i, p in enumerate(self.handles):
            x, y = int(round(p.x)), int(round(p.y))
            if not mask[max(y - r, 0) : min(y + r + 1, h), max(x - r, 0) : min(x + r + 1, w)].any():
                raise InputError(
                    f"handle {i + 1} at ({p.x:g}, {p.y:g}) is outside the editable mask: the content there "
                    "may not change, so it cannot be dragged (paint the mask over it)"
                )


HANDLE_SLACK_PX = 2
MIN_IMAGE_SIDE = 16  # below this a drag has no room (and the model would run on an upscaled blur)


def _shape(m: np.ndarray) -> str:
    return f"{m.shape[1]}x{m.shape[0]} (W x H)" if m.ndim == 2 else f"of shape {m.shape}"


Phase = Literal["load", "lora", "inversion", "drag", "denoise", "decode", "warp", "fill", "done"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an edit, streamed by ``DragEditor.iter_edit``.

    ``handles`` are the currently tracked handles in image pixels (drag phase; else the last known).
    ``preview`` is a decoded preview image when one was asked for.
    """

    phase: Phase
    step: int
    total: int
    handles: tuple[Point, ...] = ()
    loss: float | None = None
    preview: Image.Image | None = None
    message: str = ""


@dataclass
class DragResult:
    """The outcome of one edit."""

    image: Image.Image  # edited image, at the input's size
    source: Image.Image  # the input image (unchanged)
    instruction: DragInstruction
    final_handles: tuple[Point, ...]  # tracked handle positions at the end of optimisation, image pixels
    iterations: int  # optimisation iterations actually run
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    record: dict[str, Any] = field(default_factory=dict)  # JSON-ready description of the run
    frames: list[Image.Image] = field(default_factory=list)  # previews with tracked handles, if requested
    stopped: bool = False  # True when a stop request ended the optimisation early
