"""`dragdiff` command line: thin subcommands over library functions.

Each subcommand lives beside the code it fronts (``dragdiff.<area>.commands``) and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable ``(args) -> int``.
Modules are imported lazily so that ``dragdiff --help`` stays fast and a missing optional extra
(gradio for ``ui``) only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand module -> the areas it fronts; each module defines register(subparsers)
_COMMAND_MODULES: tuple[str, ...] = (
    "dragdiff.commands",  # edit, generate
    "dragdiff.model.commands",  # make-data, train-model, train-vae-decoder
    "dragdiff.bench.commands",  # bench
    "dragdiff.ui.commands",  # ui
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def quiet_libraries() -> None:
    """No loading bars or import chatter from diffusers/transformers on the command line (unless -v)."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dragdiff",
        description="Point-based (drag) image editing with diffusion models (DragDiffusion, and faster).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not built yet, or its optional extra missing
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("dragdiff: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError, OSError) as exc:
        # ValueError covers ConfigError and InputError; deep library errors are wrapped before they get here.
        print(f"dragdiff: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
