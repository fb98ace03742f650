"""Seconds per phase of an edit, on the GPU's timeline where there is one."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["Clock"]


class Clock:
    """Seconds per phase and in all.

    On CUDA a lap records an event instead of synchronising, so the host can queue the next phase (capture
    its CUDA graphs, launch its first kernels) while the GPU finishes the last one; a phase's seconds are
    then measured on the GPU's timeline (from the event ending the phase before to the one ending it), and
    ``total`` is wall-clock time once everything has finished. Elsewhere laps are wall-clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.laps: dict[str, float] = {}
        self._events: list[tuple[str, Any]] = []
        self._total: float | None = None
        self._last = self._start = time.perf_counter()
        if device.type == "cuda":
            self._events.append(("", self._event()))

    def _event(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            self._events.append((name, self._event()))
            return
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now

    def totals(self) -> dict[str, float]:
        """Seconds per phase, plus ``total`` since the clock started (the first call fixes the numbers)."""
        if self._total is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                for (_, a), (name, b) in zip(self._events, self._events[1:], strict=False):
                    self.laps[name] = a.elapsed_time(b) / 1000
                self._total = time.perf_counter() - self._start
            else:
                self._total = self._last - self._start
        return {**self.laps, "total": self._total}
