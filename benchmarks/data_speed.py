"""Time TrainingData.sample: scene drawing (CPU) + batched rendering (device).

    python benchmarks/data_speed.py [--device cuda] [--batch 256] [--size 128] [--emoji-pack PACK.npz]

Prints the median time per batch and samples/s; the trainer needs well under 100 ms for 256 images of 128 px.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dragdiff.model.data import TrainingData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--emoji-pack", default=None)
    args = parser.parse_args()
    source = TrainingData(size=args.size, emoji_pack=args.emoji_pack)
    gen = torch.Generator().manual_seed(0)
    source.sample(args.batch, gen, args.device)  # warm-up
    times = []
    for _ in range(args.repeats):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images, _ = source.sample(args.batch, gen, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"device={args.device} batch={args.batch} size={args.size}: {med * 1e3:.1f} ms/batch, "
        f"{args.batch / med:,.0f} samples/s"
    )


if __name__ == "__main__":
    main()
