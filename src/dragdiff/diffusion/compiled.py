"""``runtime.compile``: the UNet's convolution blocks under ``torch.compile`` for an edit (issue #18).

On CUDA a LoRA step spends about a fifth of its GPU time converting layouts around GroupNorm (PyTorch's
GroupNorm has no channels-last kernel) and running small elementwise kernels (SiLU, casts, adds);
Inductor can fuse a resnet's norm, activation and residual into a few kernels that read channels-last
directly. On an H100 that saves 9 % of a LoRA step and 15 % of an optimisation iteration
(``benchmarks/gpu_compile.sh``, docs/performance.md); on the CPU it is slower (``benchmarks/compile_cpu.py``).
What is compiled is each ``ResnetBlock2D``, ``Downsample2D`` and ``Upsample2D`` — the UNet's convolution
blocks — not the whole UNet: none of them holds an adapted attention Linear, so the LoRA's forward hooks
and the feature hook of motion supervision stay in eager code (Dynamo does not notice a hook added after it
traced a module: ``skip_nnmodule_hook_guards``; a whole-UNet compile would silently drop them).

Blocks of the same kind and shapes share one compiled graph (Dynamo caches on the code, not on the module);
shapes are static (the loops are fixed-shape and run under CUDA graphs), so each (block, batch, grad mode)
compiles once per process, and Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) makes later processes
compile faster. A block that fails to compile runs eagerly (``suppress_errors``), with a warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from dragdiff.diffusion.graphs import fresh_warmups

log = logging.getLogger(__name__)

# one graph per (block kind, shapes, batch, grad mode): SD-1.5 has ≈ 16 resnet shapes × 3 batch sizes × 2
# grad modes; Dynamo's default of 8 would send the rest back to eager code
RECOMPILE_LIMIT = 256

# Dynamo's settings are process-wide: two compiled edits in one process (web UI threads) take turns, so one
# cannot restore the settings while the other still runs on them
_TURN = threading.RLock()


def _blocks(unet: Any) -> list[torch.nn.Module]:
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    return [m for m in unet.modules() if isinstance(m, (ResnetBlock2D, Downsample2D, Upsample2D))]


@contextmanager
def compiled_blocks(unet: Any, enabled: bool = True) -> Iterator[int]:
    """Each convolution block of ``unet`` compiled (``nn.Module.compile``, static shapes) for the ``with``
    block, eager again on exit; yields how many blocks were compiled (0 when not ``enabled``).

    Compilation happens at a block's first call of each shape, so the first edit in a process pays it
    (minutes on a cold cache for SD-1.5, seconds for the embedded model; docs/performance.md). Compiled edits
    in one process run one at a time: the second waits here for the first to finish.
    """
    if not enabled:
        yield 0
        return
    with _TURN:
        yield from _compiled(unet)


def _compiled(unet: Any) -> Iterator[int]:
    import torch._dynamo

    cfg = torch._dynamo.config
    saved = (cfg.recompile_limit, cfg.automatic_dynamic_shapes, cfg.suppress_errors)
    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.automatic_dynamic_shapes = False  # batch 4 (LoRA), 1 (drag), 2 (denoise): three static graphs
    cfg.suppress_errors = True  # a block Inductor cannot compile here runs eagerly
    blocks = _blocks(unet)
    for block in blocks:
        block.compile(dynamic=False)
    try:
        with fresh_warmups():  # each graph's first call is eager: the blocks compile there, not in a capture
            yield len(blocks)
    finally:
        for block in blocks:
            block._compiled_call_impl = None  # what ``nn.Module.compile`` set; no public way to undo it
        cfg.recompile_limit, cfg.automatic_dynamic_shapes, cfg.suppress_errors = saved
