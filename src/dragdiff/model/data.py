"""Training data for dragdiff's embedded model: captioned images drawn on the fly, rendered on the device.

Scene parameters are drawn on the CPU (numpy, seeded from the caller's ``torch.Generator``); all pixels
are computed batched on the target device by ``dragdiff.model.scenes.render`` (and ``dragdiff.model.emoji``
when an emoji pack is given).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dragdiff.model import scenes
from dragdiff.model.emoji import EmojiPack
from dragdiff.types import InputError

log = logging.getLogger(__name__)


class TrainingData:
    """An endless source of (image, caption) pairs.

    ``size``: image side in pixels. ``emoji_pack``: an ``.npz`` from
    ``dragdiff.model.emoji.build_emoji_pack``; when given, a fraction ``emoji_fraction`` of each batch is
    emoji composited over procedural backgrounds.
    """

    def __init__(
        self, size: int = 128, emoji_pack: Path | str | None = None, emoji_fraction: float = 0.5
    ) -> None:
        if size < 8:
            raise InputError(f"training image size must be >= 8 px, got {size}")
        if not 0.0 <= emoji_fraction <= 1.0:
            raise InputError(f"emoji_fraction must be in [0, 1], got {emoji_fraction}")
        self.size = size
        self.emoji_fraction = emoji_fraction if emoji_pack is not None else 0.0
        self.emoji = EmojiPack.load(emoji_pack) if emoji_pack is not None else None

    def sample(
        self, n: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> tuple[Tensor, list[str]]:
        """``n`` images (n, 3, S, S) float32 in [-1, 1] on ``device`` and their captions.

        The same generator state gives the same scenes and captions on any device.
        """
        if n < 1:
            raise InputError(f"sample size must be >= 1, got {n}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        rng = np.random.default_rng(seed)
        n_emoji = int(rng.binomial(n, self.emoji_fraction)) if self.emoji is not None else 0
        procedural = scenes.random_scenes(rng, n - n_emoji) if n_emoji < n else []
        layout = self.emoji.plan(rng, n_emoji) if self.emoji is not None and n_emoji > 0 else None
        # one batched render for every background; emoji pasted on the last n_emoji images
        backgrounds = procedural + (layout.backgrounds if layout else [])
        out = scenes.render(backgrounds, self.size, device)  # (n, 3, S, S) in [0, 1]
        captions = [scenes.caption(s) for s in procedural]
        if layout is not None:
            assert self.emoji is not None
            out = torch.cat([out[: n - n_emoji], self.emoji.draw(out[n - n_emoji :], layout)])
            captions += layout.captions
            order = rng.permutation(n)  # interleave procedural and emoji samples
            out = out[torch.from_numpy(order).to(out.device)]
            captions = [captions[i] for i in order]
        return out * 2 - 1, captions


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 0..255 as a PNG holds them (clamped, rounded); same shape and device."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
