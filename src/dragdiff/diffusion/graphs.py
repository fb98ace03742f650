"""CUDA graphs for the fixed-shape loops of an edit (issue #6; the fast path on CUDA).

Each loop of an edit repeats one computation of fixed shapes: a LoRA training step (forward, backward, AdamW
step), a latent-optimisation iteration (forward, tracking, loss, backward, Adam step), a UNet forward
(inversion, denoising). Captured once and replayed, an iteration costs its GPU time only: the host launches
one graph instead of a few thousand kernels, and the fast path was host-bound (docs/performance.md).

``torch.cuda.graph`` does the capture; written here is only what it leaves to the caller: warm-up on a side
stream, autocast's weight cache off while capturing (a cached cast would outlive the capture), static input
buffers. A graph reads the exact tensors it was captured with, so every graph here lives inside one phase of
one edit (the merged-LoRA weights and channels-last layout it saw are still in place) and is dropped after it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

# eager iterations on a side stream before a loop is captured (lazy cuDNN/cuBLAS set-up, optimizer state)
WARMUP_STEPS = 1


def graphs_usable(device: torch.device, wanted: bool) -> bool:
    """CUDA graphs are used when asked for, on a CUDA device."""
    return wanted and device.type == "cuda" and torch.cuda.is_available()


@contextmanager
def _no_autocast_cache() -> Iterator[None]:
    previous = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(previous)


def on_side_stream(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` eagerly on a side stream (a warm-up iteration before capture), ordered with the current
    stream on both sides, under the same autocast-cache setting the capture uses."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side), _no_autocast_cache():
        out = fn()
    current.wait_stream(side)
    return out


class CapturedStep:
    """``fn()`` captured as a CUDA graph; calling the object replays it and returns the captured outputs.

    ``fn`` must read its inputs from tensors that stay alive (copy new values into them before a call) and
    make no host synchronisation. The outputs are static: they are overwritten by the next replay.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        # ``torch.cuda.graph`` would first synchronise and empty the allocator's cache (to free memory for the
        # graph): a stall of the whole queue and fresh allocations after every capture. Capturing on a side
        # stream that waits for the current one needs neither, so the host captures while the GPU works.
        self.graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream()
        stream = torch.cuda.Stream()
        stream.wait_stream(current)
        # thread_local: other threads (a UI server) may use CUDA while this one captures
        with torch.cuda.stream(stream), _no_autocast_cache():
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                self.outputs = fn()
            except BaseException:  # end the broken capture, report what broke it
                with contextlib.suppress(Exception):
                    self.graph.capture_end()
                raise
            self.graph.capture_end()
        current.wait_stream(stream)

    def __call__(self) -> Any:
        self.graph.replay()
        return self.outputs


def try_capture(fn: Callable[[], Any], what: str) -> CapturedStep | None:
    """``CapturedStep(fn)``, or None when the GPU has no memory left for the graph (an SDXL 1024² latent
    optimisation: the graph's private pool comes on top of what the eager loop holds): the caller goes on
    eagerly. Nothing has run by then (a capture records kernels, it does not execute them).

    The allocator cannot hand back its cached free blocks while a capture runs (that needs a synchronisation),
    so memory left cached by an earlier phase may fail a capture that would fit: after an out-of-memory error
    the cache is emptied and the capture tried once more."""
    for attempt in range(2):
        try:
            step = CapturedStep(fn)
        except torch.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            continue
        if attempt:
            log.info("captured the %s after emptying the allocator's cache", what)
        return step
    log.warning(
        "not enough GPU memory to capture the %s as a CUDA graph: going on without graphs "
        "(slower, same result; runtime.cuda_graphs=false skips the attempt)",
        what,
    )
    return None


_WARM: set[Any] = set()  # tags of the computations this process has run eagerly on the device
# the scope the tags are marked in: None, or a fresh one inside ``fresh_warmups``; process-wide, not per
# thread: an edit's steps may run on different threads (a UI's workers), and a computation in another edit
# that meanwhile warms up once more loses only that eager call
_SCOPE: list[object | None] = [None]


def is_warm(tag: Any) -> bool:
    """Whether this process has run the computation named ``tag`` eagerly (so it can be captured at once)."""
    return (_SCOPE[-1], tag) in _WARM


def mark_warm(tag: Any) -> None:
    _WARM.add((_SCOPE[-1], tag))


@contextmanager
def fresh_warmups() -> Iterator[None]:
    """Inside, every tagged computation is warmed up again before its first capture, as in a fresh process:
    a ``torch.compile``-d module compiles and tunes its kernels at its first call, which synchronises the
    device and so must not fall inside a capture (``diffusion.compiled``)."""
    scope = object()
    _SCOPE.append(scope)
    try:
        yield
    finally:
        _SCOPE.remove(scope)
        _WARM.difference_update([k for k in _WARM if k[0] is scope])


class GraphedForward:
    """A no-grad function ``fn(z, t, *key) -> Tensor`` of a latent and a timestep, one graph per key.

    A (shape, key) is run eagerly on a side stream the first time (warm-up), captured the next time, then
    replayed. With a ``tag`` naming the computation (e.g. the phase and the model), the warm-up is done once
    per process: a later instance with the same tag captures at its first call. ``t`` is handed to ``fn`` as
    a 0-dim int64 CUDA tensor (the UNet takes it as it takes an int). The result is a fresh tensor (the
    graph's output copied), so it can be kept across calls.
    """

    def __init__(self, fn: Callable[..., Tensor], tag: Any = None) -> None:
        self.fn = fn
        self.tag = tag if tag is not None else object()  # untagged: warm-up per instance
        self._graphs: dict[Any, tuple[CapturedStep, Tensor, Tensor]] = {}
        self._eager: set[Any] = set()  # keys whose capture ran out of memory

    def __call__(self, z: Tensor, t: int, *key: Any) -> Tensor:
        k = (tuple(z.shape), z.dtype, *key)
        if k in self._graphs:
            step, z_in, t_in = self._graphs[k]
            z_in.copy_(z)
            t_in.fill_(t)
            return step().clone()
        t_dev = torch.full((), t, dtype=torch.long, device=z.device)
        if k in self._eager:
            with torch.no_grad():
                return self.fn(z, t_dev, *key)
        if not is_warm((self.tag, *k)):  # warm-up: an eager call
            mark_warm((self.tag, *k))
            with torch.no_grad():
                return on_side_stream(lambda: self.fn(z, t_dev, *key))
        z_in = z.clone()

        def forward() -> Tensor:
            with torch.no_grad():
                return self.fn(z_in, t_dev, *key)

        captured = try_capture(forward, "UNet forward")
        if captured is None:
            self._eager.add(k)
            with torch.no_grad():
                return self.fn(z, t_dev, *key)
        self._graphs[k] = (captured, z_in, t_dev)
        return captured().clone()
