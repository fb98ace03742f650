"""``dragdiffusion``: the paper's method (Shi et al., CVPR 2024; SPEC §1–§6), top to bottom.

    2. LoRA        identity-preserving LoRA, trained once per (image, prompt, model, config) and cached (§2)
    3. inversion   DDIM inversion to z_t (§3), or the stored latent of a generated image (§6)
    4. drag        latent optimisation: motion supervision + point tracking (§4, Eq. 3–4)
    5. denoise     [z_t, ẑ_t] with reference-latent control (§5)
    6. decode      the edited branch, resized back to the input size
(Step 1, prepare, is the editor's.) Generated-image mode skips steps 2–3 and keeps classifier-free guidance.
The fast path (``runtime.fast``) merges the LoRA into the weights and runs the UNet channels-last on CUDA;
with ``runtime.compile`` its convolution blocks run under ``torch.compile``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from contextlib import nullcontext
from typing import Any

from dragdiff.config import EditConfig
from dragdiff.diffusion.compiled import compiled_blocks
from dragdiff.diffusion.context import EditContext
from dragdiff.diffusion.denoise import denoise_controlled
from dragdiff.diffusion.lora import LoraState, lora_adapter, merged_lora
from dragdiff.diffusion.optimise import optimise
from dragdiff.diffusion.unet import channels_last
from dragdiff.methods.base import DragOutcome
from dragdiff.types import DragInstruction, ProgressEvent

__all__ = ["run"]


def run(
    ctx: EditContext, instruction: DragInstruction, config: EditConfig, stop: threading.Event
) -> Generator[ProgressEvent, None, DragOutcome]:
    prep, unet, fast, clock = ctx.prep, ctx.pipe.unet, config.runtime.fast, ctx.clock
    compiled = compiled_blocks(unet, fast and config.runtime.compile)
    with channels_last(unet, fast and ctx.device.type == "cuda"), compiled:
        lora: LoraState | None = None
        if prep.work_image is not None and config.lora.enabled and config.lora.steps > 0:
            lora = yield from ctx.caches.identity_lora(prep.work_image, prep.prompt, config)  # 2
        clock.lap("lora")
        adapter: Any = nullcontext()
        if lora is not None:  # fast: merged into the weights; faithful: peft's side branch
            adapter = merged_lora(unet, config.lora, lora) if fast else lora_adapter(unet, config.lora, lora)
        with adapter:
            z_t, t, steps = yield from ctx.caches.start_latent(prep, config)  # 3
            clock.lap("inversion")
            drag = yield from optimise(ctx, z_t, t, config, stop)  # 4
            clock.lap("drag")
            latents = yield from denoise_controlled(ctx, z_t, drag.latents, steps, config)  # 5
            clock.lap("denoise")
        edited = ctx.decode(latents[1:2])  # 6
        clock.lap("decode")
    return DragOutcome(
        image=edited,
        initial_handles=drag.initial_handles,
        final_handles=drag.final_handles,
        iterations=drag.iterations,
        stopped=drag.stopped,
        converged=drag.converged,
        previews=drag.previews,
        record={
            "tracked_handles": {
                "before": [list(p.as_tuple()) for p in drag.initial_handles],
                "after": [list(p.as_tuple()) for p in drag.final_handles],
            },
            "iterations": drag.iterations,
            "converged": drag.converged,
            "stopped": drag.stopped,
            "timestep": t,
            "lora": lora is not None,
        },
    )
