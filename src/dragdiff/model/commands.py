"""``dragdiff make-data``: build the emoji pack; write preview grids or captioned training samples.
``dragdiff train-model`` and ``dragdiff train-vae-decoder`` hand their arguments to the training modules.

Examples::

    dragdiff make-data --emoji-pack .carry/emoji_pack.npz --fluent  # Noto (+ Fluent) emoji -> the pack
    dragdiff make-data --preview grid.png --emoji PACK.npz         # 8x8 grid + grid.txt with the captions
    dragdiff make-data --count 1000 --out samples/ --emoji PACK    # samples/000000.png + .txt pairs
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from dragdiff.io import IMAGE_FORMATS, atomic_save_image, atomic_write_bytes
from dragdiff.types import InputError

if TYPE_CHECKING:  # torch, numpy and PIL load only when a subcommand runs: `dragdiff --help` stays fast
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

_PREVIEW_GRID = 8  # the preview is an 8×8 grid
_BATCH = 64  # samples rendered per batch when writing --count samples


def register(subparsers: Any) -> None:
    """Add this area's subcommands (called by ``dragdiff.cli``)."""
    _register_make_data(subparsers)
    _register_train_model(subparsers)
    _register_train_vae_decoder(subparsers)


def _register_train_model(subparsers: Any) -> None:
    # The training module imports diffusers/transformers; keep `dragdiff --help` light by handing the
    # arguments over to its own parser (``dragdiff train-model --help`` shows them).
    p = subparsers.add_parser(
        "train-model",
        help="train the embedded SD-1.x-format model (VAE, then UNet + text encoder); --help for options",
        add_help=False,
    )

    def run(args: argparse.Namespace) -> int:
        from dragdiff.model.train import main

        return main(["train-model", *args.extra_args])

    p.set_defaults(func=run, passthrough=True)  # cli.main hands the unparsed arguments over as extra_args


def _register_train_vae_decoder(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-vae-decoder",
        help="fine-tune the embedded model's VAE decoder, encoder frozen (issue #17); --help for options",
        add_help=False,
    )

    def run(args: argparse.Namespace) -> int:
        from dragdiff.model.decoder import main

        return main(["train-vae-decoder", *args.extra_args])

    p.set_defaults(func=run, passthrough=True)


def _register_make_data(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "make-data",
        help="build the emoji pack; preview or export the embedded model's training data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--emoji-pack", type=Path, metavar="OUT.npz", help="build the emoji pack here (needs apt-get)"
    )
    p.add_argument(
        "--noto-font", type=Path, metavar="FONT.ttf", help="use this NotoColorEmoji.ttf, no download"
    )
    p.add_argument("--fluent", action="store_true", help="add Fluent flat emoji to the pack (npm + cairosvg)")
    p.add_argument(
        "--fluent-dir", type=Path, metavar="DIR", help="use this folder of Fluent SVGs, no download"
    )
    p.add_argument("--emoji-size", type=int, default=64, help="emoji pack sprite size in px (default 64)")
    p.add_argument("--emoji", type=Path, metavar="PACK.npz", help="mix emoji from this pack into the samples")
    p.add_argument("--emoji-fraction", type=float, default=0.5, help="share of emoji samples (default 0.5)")
    p.add_argument(
        "--preview",
        type=Path,
        metavar="OUT.png",
        help="write an 8x8 grid (.png/.jpg/.webp) and OUT.txt captions",
    )
    p.add_argument("--count", type=int, default=0, help="number of samples to write into --out")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for --count PNG + caption pairs")
    p.add_argument("--size", type=int, default=128, help="image size in px (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device to render on (default cpu)")
    p.set_defaults(func=make_data)


def _check(args: argparse.Namespace) -> None:
    if not (args.emoji_pack or args.preview or args.count):
        raise InputError("make-data needs at least one of --emoji-pack, --preview, --count N --out DIR")
    if args.count < 0:
        raise InputError(f"--count must be >= 0, got {args.count}")
    if args.count and args.out is None:
        raise InputError(f"--count {args.count} needs --out DIR")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    if args.preview is not None and args.preview.suffix.lower() not in IMAGE_FORMATS:
        raise InputError(
            f"--preview must end in one of {', '.join(sorted(IMAGE_FORMATS))}, got {args.preview}"
        )
    if args.emoji is not None and not args.emoji.is_file():
        raise InputError(f"--emoji pack not found: {args.emoji}")


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, S, S) in [-1, 1] -> PIL images."""
    from PIL import Image

    from dragdiff.model.data import to_uint8

    arr = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # (B, S, S, 3)
    return [Image.fromarray(a) for a in arr]


def _grid(images: torch.Tensor, rows: int) -> Image.Image:
    """(rows·rows, 3, S, S) in [-1, 1] -> one rows×rows grid image."""
    import numpy as np
    from PIL import Image

    from dragdiff.model.data import to_uint8

    s = images.shape[-1]
    arr = to_uint8(images).cpu().numpy()  # (B, 3, S, S)
    arr = arr.reshape(rows, rows, 3, s, s).transpose(0, 3, 1, 4, 2).reshape(rows * s, rows * s, 3)
    return Image.fromarray(np.ascontiguousarray(arr))


def make_data(args: argparse.Namespace) -> int:
    import torch

    from dragdiff.model.data import TrainingData
    from dragdiff.model.emoji import EmojiPack, build_emoji_pack, pack_summary

    _check(args)
    emoji = args.emoji
    if args.emoji_pack is not None:
        with tqdm(unit=" emoji", desc=f"building {args.emoji_pack}") as bar:
            emoji = build_emoji_pack(
                args.emoji_pack,
                size=args.emoji_size,
                font=args.noto_font,
                fluent=args.fluent,
                fluent_dir=args.fluent_dir,
                progress=lambda _name: bar.update(),
            )
        print(pack_summary(EmojiPack.load(emoji)))
    if not (args.preview or args.count):
        return 0
    source = TrainingData(size=args.size, emoji_pack=emoji, emoji_fraction=args.emoji_fraction)
    gen = torch.Generator().manual_seed(args.seed)
    if args.preview is not None:
        images, captions = source.sample(_PREVIEW_GRID**2, gen, args.device)
        atomic_save_image(_grid(images, _PREVIEW_GRID), args.preview)
        lines = [f"{i // _PREVIEW_GRID} {i % _PREVIEW_GRID}\t{c}" for i, c in enumerate(captions)]
        atomic_write_bytes(args.preview.with_suffix(".txt"), ("\n".join(lines) + "\n").encode())
        print(f"wrote {args.preview} and {args.preview.with_suffix('.txt')} (row col<TAB>caption)")
    if args.count:
        args.out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=args.count, unit="img", desc="make-data") as bar:
            for start in range(0, args.count, _BATCH):
                images, captions = source.sample(min(_BATCH, args.count - start), gen, args.device)
                for i, (img, text) in enumerate(zip(_to_pil(images), captions, strict=True)):
                    stem = args.out / f"{start + i:06d}"
                    atomic_save_image(img, stem.with_suffix(".png"))
                    atomic_write_bytes(stem.with_suffix(".txt"), (text + "\n").encode())
                bar.update(len(captions))
        print(f"wrote {args.count} PNG + caption pairs to {args.out}")
    return 0
