"""`dragdiff ui`: serve the interactive web editor (gradio is imported only when the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUTPUT = Path("out") / "ui"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve the interactive drag editor in the browser",
        description=(
            "Serve the web editor: upload or generate an image, paint the editable mask, click handle/target "
            "pairs and run the drag. Binds 127.0.0.1 (this machine only) unless --host or --share is given."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--share", action="store_true", help="also open a public Gradio share tunnel (off by default)"
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="SD-1.x, SD-2.x or SDXL: diffusers folder, .safetensors file or hub id (default: embedded)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"folder for results; the only folder the app serves files from (default: {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--max-file-size", default="25mb", help="largest accepted upload (default: 25mb)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dragdiff.editor import DragEditor
    from dragdiff.ui.app import build_app, close, serve

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    device = args.device

    def load(model: str | None) -> DragEditor:
        return DragEditor(model=model, device=device)

    editor = load(args.model)  # load now: a bad --model fails here, not on the first click
    app = build_app(load, output_dir=args.output, model=args.model, preloaded=editor)
    url = serve(
        app,
        output_dir=args.output,
        host=args.host,
        port=args.port,
        share=args.share,
        max_file_size=args.max_file_size,
        block=False,
    )
    reach = (
        "public share link" if args.share else "this machine only" if args.host == "127.0.0.1" else args.host
    )
    print(f"dragdiff ui: {url} ({reach}); results in {args.output}; Ctrl-C to stop", flush=True)
    try:
        app.block_thread()
    finally:
        close(app, timeout=5.0)
    return 0
