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
        self.emoji = None
        if emoji_pack is not None:
            raise InputError(f"emoji packs are not supported yet, got {emoji_pack}")

    def sample(
        self, n: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> tuple[Tensor, list[str]]:
        """``n`` images (n, 3, S, S) float32 in [-1, 1] on ``device`` and their captions.

        The same generator state gives the same batch on any device.
        """
        if n < 1:
            raise InputError(f"sample size must be >= 1, got {n}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        rng = np.random.default_rng(seed)
        n_emoji = int(rng.binomial(n, self.emoji_fraction)) if self.emoji is not None else 0
        images: list[Tensor] = []
        captions: list[str] = []
        if n - n_emoji > 0:
            batch = scenes.random_scenes(rng, n - n_emoji)
            images.append(scenes.render(batch, self.size, device))
            captions += [scenes.caption(s) for s in batch]
        out = torch.cat(images) if len(images) > 1 else images[0]  # (n, 3, S, S) in [0, 1]
        if len(images) > 1:  # interleave procedural and emoji samples
            order = rng.permutation(n)
            out = out[torch.from_numpy(order).to(out.device)]
            captions = [captions[i] for i in order]
        return out * 2 - 1, captions
