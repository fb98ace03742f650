"""UNet decoder features through a removable forward hook (paper §3.3; SPEC §4).

The reference implementation copied the whole UNet forward to read one block's output; a forward hook on
``unet.up_blocks[index]`` gives the same tensor without touching the forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


class FeatureCapture:
    """Holds the output of the hooked block from the latest UNet forward."""

    def __init__(self) -> None:
        self.features: Tensor | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.features = output[0] if isinstance(output, tuple) else output  # (B, C, h, w)

    def pop(self) -> Tensor:
        """The captured features (and forget them); an error if no forward ran inside the context."""
        if self.features is None:
            raise RuntimeError("no UNet forward ran while capturing features")
        out, self.features = self.features, None
        return out


@contextmanager
def capture_up_block(unet: Any, index: int) -> Iterator[FeatureCapture]:
    """Collect ``unet.up_blocks[index]``'s output during forwards inside the ``with`` block.

    ``index = 2`` is the reference's feature layer for SD-1.5 (640 channels at latent resolution).
    """
    blocks = unet.up_blocks
    if not 0 <= index < len(blocks):
        raise ValueError(
            f"drag.feature_up_block must be in [0, {len(blocks) - 1}] for this UNet, got {index}"
        )
    capture = FeatureCapture()
    handle = blocks[index].register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()


class _FeaturesReady(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """Raised by the early-exit hook to end the UNet forward right after the feature block."""

    def __init__(self, features: Tensor) -> None:
        super().__init__()
        self.features = features


def _stop_here(module: nn.Module, inputs: Any, output: Any) -> None:
    raise _FeaturesReady(output[0] if isinstance(output, tuple) else output)


def up_block_output(unet: Any, index: int, *args: Any, **kwargs: Any) -> Tensor:
    """``unet.up_blocks[index]``'s output for ``unet(*args, **kwargs)``, skipping everything after that block.

    Diffusers' UNet has no early exit, so a forward hook on the block raises once the block has run: the
    forward is diffusers' own (no copy), the autograd graph up to the features is intact (gradients reach
    the input latent and any adapters), and the later up blocks, the output norm and ``conv_out`` never run.
    """
    blocks = unet.up_blocks
    if not 0 <= index < len(blocks):
        raise ValueError(
            f"drag.feature_up_block must be in [0, {len(blocks) - 1}] for this UNet, got {index}"
        )
    handle = blocks[index].register_forward_hook(_stop_here)
    try:
        unet(*args, **kwargs)
    except _FeaturesReady as ready:
        return ready.features
    finally:
        handle.remove()
    raise RuntimeError(f"the UNet forward never reached up_blocks[{index}]")
