"""Latent optimisation: motion supervision + point tracking on z_t (paper §3.3, Eq. 3–4; SPEC §4).

``optimise`` runs the loop eagerly (op by op) or, on CUDA's fast path, as one captured CUDA graph per
iteration; both stream a ``ProgressEvent`` per iteration and honour the stop flag.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from dragdiff.config import EditConfig
from dragdiff.diffusion.context import EditContext
from dragdiff.diffusion.features import capture_up_block
from dragdiff.diffusion.graphs import WARMUP_STEPS, CapturedStep, on_side_stream, try_capture
from dragdiff.diffusion.inversion import alpha_at, previous_timestep
from dragdiff.diffusion.unet import combine_features, unet_eps, unet_features
from dragdiff.ops import (
    ddim_transfer,
    features_at,
    mask_term,
    motion_loss,
    predict_x0_eps,
    reached,
    resize_bilinear,
    track_points,
)
from dragdiff.types import Point, ProgressEvent

__all__ = ["DragRun", "features", "optimise"]


@dataclass
class DragRun:
    """The optimisation's outcome."""

    latents: Tensor  # (1, 4, h, w) ẑ_t after optimisation
    initial_handles: tuple[Point, ...]  # image px
    final_handles: tuple[Point, ...]
    iterations: int
    stopped: bool
    converged: bool
    previews: list[tuple[Image.Image, tuple[Point, ...]]]  # (x̂_0 preview, tracked handles) pairs


class _HostReader:
    """The optimisation's one device->host read per iteration.

    Blocking (``overlap=False``, the faithful path) reads at ``start``. Overlapped (the fast path, on CUDA)
    starts an asynchronous copy into pinned memory and records an event, so the host can queue the backward
    before ``wait`` blocks on the copy alone rather than on everything queued so far.
    """

    def __init__(self, device: torch.device, overlap: bool) -> None:
        self.overlap = overlap and device.type == "cuda"
        self._host: Tensor | None = None
        self._event: Any = None

    def start(self, values: Tensor) -> None:
        if not self.overlap:
            self._host = values.cpu()
            return
        if self._host is None or self._host.shape != values.shape:
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        self._host.copy_(values, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def wait(self) -> Tensor:
        assert self._host is not None
        if self._event is not None:
            self._event.synchronize()
        return self._host.clone() if self.overlap else self._host


def optimise(
    ctx: EditContext, z_t: Tensor, t: int, config: EditConfig, stop: threading.Event
) -> Generator[ProgressEvent, None, DragRun]:
    """Motion supervision + point tracking on z_t (Eq. 3–4); one UNet forward/backward per iteration.

    Notation: ẑ_t the optimised latent (``z``), F the features on the grid, h_i/g_i handles/targets,
    f_i = F⁰ at the original handles (``reference``), x⁰_{t-1} the DDIM step from the un-optimised z_t.
    With CUDA graphs an iteration is replayed whole (forward, tracking, loss, backward, Adam step), so the
    stop rule is read after the update and a stopping iteration's update is undone (ẑ_t restored).
    """
    drag, sched, every = config.drag, ctx.pipe.scheduler, config.runtime.preview_every
    graphed, device, prep = ctx.graphed, ctx.device, ctx.prep
    # device tensors when graphed: a capture may not copy host values to the device
    alphas = alpha_at(sched, t).item(), alpha_at(sched, previous_timestep(sched, t)).item()
    a_t: float | Tensor = alphas[0]
    a_prev: float | Tensor = alphas[1]
    t_in: int | Tensor = t
    if graphed:
        a_t, a_prev = (torch.full((), a, device=device) for a in alphas)
        t_in = torch.full((), t, dtype=torch.long, device=device)
    pred_type = sched.config.prediction_type
    masked = prep.mask is not None  # ε is needed only for the mask term (and previews)
    ref: dict[str, Tensor] = {}  # "f": f_i (N, C) = F⁰ at the original handles; "x": x⁰_{t-1} (masked)

    def keep_references(f0: Tensor, eps0: Tensor | None) -> None:
        ref["f"] = features_at(f0, prep.handles)  # (N, C) f_i
        if eps0 is not None and masked:
            ref["x"] = ddim_transfer(z_t, eps0, a_t, a_prev, pred_type)

    if not config.runtime.fast:  # the reference's own no-grad forward for F⁰ and ε⁰
        with torch.no_grad():
            keep_references(*features(ctx, z_t, t_in, config, need_eps=masked))
    z = z_t.detach().float().clone().requires_grad_(True)  # ẑ_t, the fp32 leaf
    # fused on CUDA (its step count on the device): the same in a CUDA graph as eagerly
    on_cuda = device.type == "cuda"
    optimiser = torch.optim.Adam([z], lr=drag.lr, fused=on_cuda, capturable=on_cuda)

    def forward(handles: Tensor, track: bool, need_eps: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Features, tracking (Eq. 4), stop rule, loss (Eq. 3 + mask term) at the current ẑ_t.
        Returns (report = [all done, loss, handles (row, col)...], loss, ε or None)."""
        feats, eps = features(ctx, z, t_in, config, need_eps=need_eps)
        if not ref:  # fast path, first iteration: ẑ_t = z_t, so this forward gives F⁰ and ε⁰ (the mask
            # term is then |x - x| = 0 with a zero gradient, as with a separate forward)
            keep_references(feats.detach(), eps.detach() if eps is not None else None)
        if track:
            handles = track_points(feats, ref["f"], handles, drag.r_p)  # Eq. 4
        done = reached(handles, prep.targets, drag.stop_distance)  # (N,) bool
        loss = motion_loss(feats, handles, prep.targets, drag.r_m, active=~done)  # Eq. 3
        if "x" in ref and eps is not None and prep.mask is not None:
            x_prev = ddim_transfer(z, eps, a_t, a_prev, pred_type)
            loss = loss + mask_term(x_prev, ref["x"], prep.mask, drag.lam)
        report = torch.cat([done.all().float().view(1), loss.detach().float().view(1), handles.flatten()])
        return report, loss, eps

    if graphed:
        n = drag.max_iterations
        run = _graphed_iterations(device, z, prep.handles, optimiser, forward, masked, n, every, stop)
    else:
        run = _eager_iterations(device, prep.handles, optimiser, forward, masked, config, stop)
    frames: list[tuple[Image.Image, tuple[Point, ...]]] = []
    handles, stopped, converged, iterations = prep.handles, False, False, 0
    for it, host, eps, status in run:
        handles = host[2:].view(-1, 2)
        if status != "step":
            stopped, converged = status == "stopped", status == "converged"
            break
        iterations = it + 1
        points = prep.to_points(handles)
        preview = None
        if eps is not None and every and (it + 1) % every == 0:
            preview = _preview(ctx, z.detach(), eps.detach(), float(a_t), pred_type)
            frames.append((preview, points))
        yield ProgressEvent(
            phase="drag",
            step=iterations,
            total=drag.max_iterations,
            handles=points,
            loss=float(host[1]),
            preview=preview,
        )
    return DragRun(
        latents=z.detach(),
        initial_handles=prep.to_points(prep.handles),
        final_handles=prep.to_points(handles),
        iterations=iterations,
        stopped=stopped,
        converged=converged,
        previews=frames,
    )


def _eager_iterations(
    device: torch.device,
    handles: Tensor,
    optimiser: torch.optim.Optimizer,
    forward: Any,
    masked: bool,
    config: EditConfig,
    stop: threading.Event,
) -> Iterator[tuple[int, Tensor, Tensor | None, str]]:
    """The optimisation loop run op by op: yields (iteration, host report, ε, status) per iteration;
    status "step" after an update, "converged" (stop rule, no update) or "stopped" (the stop flag)."""
    every = config.runtime.preview_every
    reader = _HostReader(device, overlap=config.runtime.fast)
    host = torch.cat([torch.zeros(2), handles.detach().float().cpu().flatten()])
    for it in range(config.drag.max_iterations):
        if stop.is_set():
            yield it, host, None, "stopped"
            return
        preview_due = bool(every) and (it + 1) % every == 0
        report, loss, eps = forward(handles, it > 0, masked or preview_due)
        # the one host read of the iteration; the fast path queues the backward before waiting for it
        # (unused if the stop rule fires: ẑ_t is not updated)
        reader.start(report)
        optimiser.zero_grad(set_to_none=True)
        if reader.overlap:
            loss.backward()
        host = reader.wait()
        handles = report[2:].detach().view(-1, 2)
        if host[0] > 0:  # stop rule, checked before the update (SPEC §4)
            yield it, host, None, "converged"
            return
        if not reader.overlap:
            loss.backward()
        optimiser.step()
        yield it, host, eps, "step"


def _graphed_iterations(
    device: torch.device,
    z: Tensor,
    handles: Tensor,
    optimiser: torch.optim.Optimizer,
    forward: Any,
    masked: bool,
    max_iterations: int,
    preview_every: int,
    stop: threading.Event,
) -> Iterator[tuple[int, Tensor, Tensor | None, str]]:
    """``_eager_iterations`` with each iteration from the first tracked one on as one CUDA graph.

    The first ``WARMUP_STEPS`` iterations (at least iteration 0: no tracking, and it sets the references)
    run eagerly on a side stream, then the iteration is captured and replayed. Every iteration updates
    ẑ_t; when the report says the stop rule fired, the update is undone from the copy the iteration
    kept, which leaves ẑ_t as the eager loop leaves it. An iteration that decodes a preview needs ε on the
    host's side, so it runs eagerly too (the same computation; the graph reads the same tensors after it).
    """
    current = handles.detach().clone()  # (N, 2) the tracked handles, updated in place
    z_before = torch.empty_like(z)
    reader = _HostReader(device, overlap=True)
    host = torch.cat([torch.zeros(2), handles.detach().float().cpu().flatten()])

    def iteration(track: bool, need_eps: bool = masked) -> tuple[Tensor, Tensor | None]:
        z_before.copy_(z.detach())
        report, loss, eps = forward(current, track, need_eps)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        current.copy_(report[2:].view(-1, 2))
        return report, eps

    captured: CapturedStep | None = None
    capture_failed = False  # out of GPU memory for the graph: every iteration runs eagerly
    for it in range(max_iterations):
        if stop.is_set():
            yield it, host, None, "stopped"
            return
        preview_due = bool(preview_every) and (it + 1) % preview_every == 0
        eps: Tensor | None = None
        if captured is None or preview_due:
            report, eps = on_side_stream(
                lambda: iteration(it > 0, masked or preview_due)  # noqa: B023 (called now)
            )
        else:
            report, _ = captured()
        reader.start(report)
        if captured is None and not capture_failed and max(WARMUP_STEPS, 1) <= it + 1 < max_iterations:
            # capture the next iterations while the GPU still runs this one
            optimiser.zero_grad(set_to_none=True)  # the graph allocates its own gradient
            captured = try_capture(lambda: iteration(track=True), "latent optimisation")
            capture_failed = captured is None
        host = reader.wait()
        if host[0] > 0:  # the stop rule fired before this update: undo it (SPEC §4)
            with torch.no_grad():
                z.copy_(z_before)
            yield it, host, None, "converged"
            return
        yield it, host, eps, "step"


def features(
    ctx: EditContext, z: Tensor, t: int | Tensor, config: EditConfig, need_eps: bool = True
) -> tuple[Tensor, Tensor | None]:
    """One UNet forward: (features on the supervision grid (1, C, H'', W''), ε (1, 4, h, w) or None).

    The fast path stops the forward after the feature block when ε is not needed (None is returned);
    the features and their gradients are the same as the full forward's.
    """
    unet, index, amp, prep = ctx.pipe.unet, config.drag.feature_up_block, ctx.amp, ctx.prep
    if index is None:  # the editor fills it in from the model family (DragEditor.for_model)
        raise ValueError("drag.feature_up_block is None: run the edit through DragEditor")
    eps: Tensor | None = None
    if need_eps or not config.runtime.fast:
        with capture_up_block(unet, index) as capture:
            eps = unet_eps(unet, z, t, prep.cond, amp)
        raw = capture.pop()
    else:
        raw = unet_features(unet, z, t, prep.cond, index, amp)
    feats = combine_features(raw.float(), prep.cond)  # (1, C, h, w); 2C with guidance
    # = F.interpolate(bilinear, align_corners=False) as two matmuls: a deterministic backward on CUDA
    return resize_bilinear(feats, prep.grid_hw, align_corners=False), eps


def _preview(ctx: EditContext, z: Tensor, eps: Tensor, a_t: float, pred_type: str) -> Image.Image:
    """x̂_0 of the current latent, decoded and resized to the input size (a cheap look at the edit)."""
    x0, _ = predict_x0_eps(z, eps, a_t, pred_type)
    return ctx.decode(x0)
