"""The one signature every drag method has, and what it returns.

A method is a generator function ``run(ctx, instruction, config, stop)``: it streams ``ProgressEvent``s and
returns a ``DragOutcome``. ``ctx`` (``diffusion.context.EditContext``) holds the loaded pipeline, the
prepared image and points, the clock and the editor's caches (identity LoRA, inversion). The editor checks
the inputs before, and composites, records and returns the result after.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from dragdiff.config import EditConfig
from dragdiff.diffusion.context import EditContext
from dragdiff.types import DragInstruction, Point, ProgressEvent

__all__ = ["DragOutcome", "Method"]


@dataclass
class DragOutcome:
    """What a method hands back to the editor."""

    image: Image.Image  # the edited picture, at the input image's size
    initial_handles: tuple[Point, ...]  # image px
    final_handles: tuple[Point, ...]  # where the method says each handle's content ended up
    iterations: int = 0
    stopped: bool = False  # the user's stop flag ended the method early
    converged: bool = False  # the method's own stop rule ended it
    previews: list[tuple[Image.Image, tuple[Point, ...]]] = field(default_factory=list)  # (preview, handles)
    record: dict[str, Any] = field(default_factory=dict)  # method-specific facts for the JSON record


class Method(Protocol):
    def __call__(
        self, ctx: EditContext, instruction: DragInstruction, config: EditConfig, stop: threading.Event
    ) -> Generator[ProgressEvent, None, DragOutcome]: ...
