"""Draw the loss curves of a training run's log.jsonl as a PNG (PIL only; no plotting library needed).

Usage: python docs/training/plot_loss.py docs/training/call2/log.jsonl docs/training/loss.png
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

W, H, PAD = 480, 260, 40


def panel(records: list[dict], phase: str, key: str, title: str) -> Image.Image:
    pts = [(r["step"], r[key]) for r in records if r.get("phase") == phase and key in r]
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    d.text((PAD, 8), title, fill="black")
    if not pts:
        return im
    xs, ys = [p[0] for p in pts], [math.log10(p[1]) for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    d.rectangle([PAD, PAD, W - 10, H - PAD], outline="gray")

    def xy(x: float, y: float) -> tuple[float, float]:
        return (
            PAD + (x - x0) / max(x1 - x0, 1) * (W - 10 - PAD),
            H - PAD - (y - y0) / max(y1 - y0, 1e-9) * (H - 2 * PAD),
        )

    d.line([xy(x, y) for x, y in zip(xs, ys, strict=True)], fill="navy", width=2)
    d.text((PAD, H - PAD + 6), f"step {x0}", fill="black")
    d.text((W - 90, H - PAD + 6), f"step {x1}", fill="black")
    d.text((2, PAD), f"{10**y1:.3f}", fill="black")
    d.text((2, H - PAD - 10), f"{10**y0:.3f}", fill="black")
    return im


def main(log_path: str, out_path: str) -> None:
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    panels = [
        panel(records, "vae", "loss", "VAE loss (L1 + gradient + KL), log scale"),
        panel(records, "unet", "loss", "UNet loss (one batch per point), log scale"),
    ]
    out = Image.new("RGB", (W * len(panels), H), "white")
    for i, p in enumerate(panels):
        out.paste(p, (i * W, 0))
    out.save(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
