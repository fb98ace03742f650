"""Regenerate the example images in this folder (deterministic).

    python examples/make_examples.py [--emoji-pack .carry/emoji_pack.npz]

sample.png        a red star on a plain white background (128×128): the README demo drags it
sample_moved.png  the exact ground truth of that drag: the same scene with the star moved 20 px right
emoji.png         an emoji composite (needs the emoji pack from `dragdiff make-data --emoji-pack`)
emoji_star.png    the same with the star emoji
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dragdiff.io import atomic_save_image
from dragdiff.model import emoji, scenes

SIZE = 128
HERE = Path(__file__).resolve().parent
DRAG_PX = 20  # the suggested drag, in pixels (session 5: 20 px; it was 30)


def _png(image) -> Image.Image:
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (S, S, 3)
    return Image.fromarray(arr)


def star_scene() -> scenes.Scene:
    bg = scenes.Background("plain", "white", (0.95, 0.95, 0.93), (0.95, 0.95, 0.93))
    star = scenes.SceneObject(
        "star", "red", (0.86, 0.12, 0.12), x=48 / SIZE, y=64 / SIZE, size=0.24, shade=0.5, shadow=0.3
    )
    return scenes.Scene(bg, (star,), light=-2.2)


def emoji_example(pack: emoji.EmojiPack, name: str = "smiling face with sunglasses") -> Image.Image:
    bg = scenes.Background(
        "stripes", "blue", scenes.PALETTE["blue"], (0.45, 0.58, 0.93), angle=0.6, scale=5.0, seed=1
    )
    layout = emoji.EmojiLayout(
        backgrounds=[scenes.Scene(bg, ())],
        count=np.array([1]),
        which=np.array([[pack.names.index(name), 0]]),
        centres=np.array([[[0.4, 0.5], [0.5, 0.5]]]),
        half=np.array([[0.28, 0.1]]),
        angle=np.array([[0.0, 0.0]]),
        captions=[f"{emoji.emoji_phrase(name)} {scenes.background_phrase(bg)}"],
    )
    image = pack.draw(scenes.render(layout.backgrounds, SIZE), layout)[0]
    return _png(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-pack", type=Path, default=Path(".carry/emoji_pack.npz"))
    args = parser.parse_args()
    scene = star_scene()
    moved = scenes.move(scene, 0, DRAG_PX / SIZE, 0.0)
    atomic_save_image(_png(scenes.render([scene], SIZE)[0]), HERE / "sample.png")
    atomic_save_image(_png(scenes.render([moved], SIZE)[0]), HERE / "sample_moved.png")
    hx, hy = scenes.object_point(scene, 0, 0.0, 0.0)
    tx, ty = scenes.object_point(moved, 0, 0.0, 0.0)
    print(
        f"sample.png: {scenes.caption(scene)!r}; drag {hx * SIZE:g},{hy * SIZE:g}:{tx * SIZE:g},{ty * SIZE:g}"
    )
    if args.emoji_pack.is_file():
        pack = emoji.EmojiPack.load(args.emoji_pack)
        atomic_save_image(emoji_example(pack), HERE / "emoji.png")
        atomic_save_image(emoji_example(pack, "star"), HERE / "emoji_star.png")
        print("emoji.png, emoji_star.png written")
    else:
        print(f"no emoji pack at {args.emoji_pack}: emoji.png not rewritten")


if __name__ == "__main__":
    main()
