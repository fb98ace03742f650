"""Denoising with reference-latent control (paper §3.4; SPEC §5): "latent-MasaCtrl"."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import nullcontext

import torch
from torch import Tensor

from dragdiff.config import EditConfig
from dragdiff.diffusion.attention import reference_control
from dragdiff.diffusion.context import EditContext
from dragdiff.diffusion.graphs import GraphedForward
from dragdiff.diffusion.unet import unet_eps
from dragdiff.types import ProgressEvent

__all__ = ["denoise_controlled"]


def denoise_controlled(
    ctx: EditContext, z_src: Tensor, z_edit: Tensor, steps: list[int], config: EditConfig
) -> Generator[ProgressEvent, None, Tensor]:
    """Denoise the batch [source, edited]; edited self-attention reads the source's keys/values (§5).

    Returns the (2, 4, h, w) denoised batch; one progress event per DDIM step.
    """
    unet, sched, den, cond = ctx.pipe.unet, ctx.pipe.scheduler, config.denoise, ctx.prep.cond
    z = torch.cat([z_src, z_edit]).float()  # (2, 4, h, w): [source, edited]
    control = reference_control(unet, den.control_levels) if den.reference_control else nullcontext(None)

    def unet_call(z: Tensor, t: int | Tensor, controlled: bool = False) -> Tensor:
        return unet_eps(unet, z, t, cond, ctx.amp)  # [src, edit] pairs, x2 with guidance

    # graphed: one graph per state of the control switch (``controlled`` is the graph's key)
    tag = ("denoise", id(unet), ctx.amp, den.control_levels, cond.cfg)
    eps_fn: Callable[..., Tensor] = GraphedForward(unet_call, tag) if ctx.graphed else unet_call
    with control as switch, torch.no_grad():
        for i, t in enumerate(steps):
            if switch is not None:
                switch.enabled = i >= den.control_from_step
            eps = eps_fn(z, t, switch is not None and switch.enabled)
            z = sched.step(eps, t, z).prev_sample
            yield ProgressEvent(phase="denoise", step=i + 1, total=len(steps))
    return z
