"""dragdiff: point-based (drag) image editing with diffusion models.

from dragdiff import DragEditor, DragInstruction
editor = DragEditor()                       # the embedded default model
result = editor.edit(image, DragInstruction.from_pairs([((40, 60), (80, 60))], prompt="a red star"))
result.image.save("edited.png")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dragdiff.config import PRESETS, EditConfig, preset
from dragdiff.types import DragInstruction, DragResult, InputError, Point, ProgressEvent

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "DragEditor",
    "DragInstruction",
    "DragResult",
    "EditConfig",
    "InputError",
    "Point",
    "ProgressEvent",
    "preset",
]

if TYPE_CHECKING:
    from dragdiff.editor import DragEditor


def __getattr__(name: str) -> Any:  # lazy: importing dragdiff must not import torch/diffusers
    if name == "DragEditor":
        from dragdiff.editor import DragEditor

        return DragEditor
    raise AttributeError(name)
