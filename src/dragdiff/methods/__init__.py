"""Drag methods: one module each, one signature for all (``methods.base.Method``).

``METHODS`` maps the names that ``EditConfig.method`` and the presets use to the methods' ``run``.
"""

from __future__ import annotations

from dragdiff.config import ConfigError
from dragdiff.methods import dragdiffusion, warp
from dragdiff.methods.base import DragOutcome, Method

__all__ = ["METHODS", "DragOutcome", "Method", "get_method"]

METHODS: dict[str, Method] = {
    "dragdiffusion": dragdiffusion.run,
    "warp": warp.run,
}


def get_method(name: str) -> Method:
    """The method called ``name``; unknown names are an error listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
