"""What a drag method is handed: the loaded pipeline, the prepared inputs and the editor's caches.

``DragEditor`` builds one ``EditContext`` per edit (step 1, prepare) and passes it to the chosen method
(``dragdiff.methods``); the building blocks in this package (``optimise``, ``denoise``) take it too, so a
method reads as a list of calls on one object instead of a dozen arguments.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor

from dragdiff.config import EditConfig
from dragdiff.diffusion.clock import Clock
from dragdiff.diffusion.generate import GeneratedImage
from dragdiff.diffusion.inversion import decode_latents, tensor_to_pil
from dragdiff.diffusion.lora import LoraState
from dragdiff.diffusion.unet import Conditioning
from dragdiff.ops import grid_to_image
from dragdiff.types import Point, ProgressEvent

__all__ = ["EditContext", "ModelCaches", "Prepared"]


@dataclass
class Prepared:
    """Step 1's output: everything later steps need, in engine units."""

    image_hw: tuple[int, int]  # (H, W) of the user's image
    work_hw: tuple[int, int]  # (H', W') pixels the model runs at
    grid_hw: tuple[int, int]  # supervision grid (SPEC §4: half the work size)
    source: Image.Image  # the user's image (RGB), or the generated image
    work_image: Image.Image | None  # real mode: the image at work size
    handles: Tensor  # (N, 2) (row, col) on the grid
    targets: Tensor  # (N, 2)
    mask: Tensor | None  # (1, 1, h, w) at latent size, 1 = may change
    cond: Conditioning
    generated: GeneratedImage | None
    prompt: str  # the instruction's prompt (real mode: the LoRA and inversion depend on it)

    def to_points(self, grid_points: Tensor) -> tuple[Point, ...]:
        """(N, 2) (row, col) on the grid -> image-pixel Points."""
        xy = grid_to_image(grid_points.detach().cpu(), self.grid_hw, self.image_hw).tolist()
        return tuple(Point(float(x), float(y)) for x, y in xy)


class ModelCaches(Protocol):
    """The editor's caches, which outlive one edit (implemented by ``DragEditor``)."""

    def identity_lora(
        self, work_image: Image.Image, prompt: str, config: EditConfig
    ) -> Generator[ProgressEvent, None, LoraState]:
        """The identity LoRA of this image and prompt: cached, or trained now (streams its steps)."""
        ...

    def start_latent(
        self, prep: Prepared, config: EditConfig
    ) -> Generator[ProgressEvent, None, tuple[Tensor, int, list[int]]]:
        """z_t, its timestep and the timesteps that denoise it (inverted, cached, or a generated latent)."""
        ...


@dataclass
class EditContext:
    """One edit's world: pipeline, prepared inputs, how the UNet runs, the clock and the caches."""

    pipe: Any  # a diffusers StableDiffusionPipeline (DDIM scheduler)
    prep: Prepared
    amp: torch.dtype | None  # autocast dtype of UNet calls (None: the UNet's own dtype)
    graphed: bool  # replay fixed-shape loops as CUDA graphs
    clock: Clock
    caches: ModelCaches

    @property
    def device(self) -> torch.device:
        return torch.device(self.pipe.unet.device)

    def decode(self, latents: Tensor) -> Image.Image:
        """Latents (1, 4, h, w) -> a PIL image at the input's size."""
        image = tensor_to_pil(decode_latents(self.pipe, latents))[0]
        h, w = self.prep.image_hw
        return image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)
