"""Training-step throughput of the embedded model's networks (random data, as in the recipe's steps).

Usage: python benchmarks/train_speed.py [--tiny] [--steps 20] [--unet-batch 256] [--vae-batch 64] [--out FILE]
Prints a table and writes JSON. On CUDA: bf16 autocast, channels-last, cudnn.benchmark, AdamW (the recipe's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from dragdiff.model.arch import (
    TINY_SPEC,
    ModelSpec,
    build_text_encoder,
    build_unet,
    build_vae,
    count_parameters,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], device: torch.device, steps: int, warmup: int = 3) -> float:
    """Median seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unet_step_fn(spec: ModelSpec, batch: int, device: torch.device) -> tuple[Callable[[], None], int]:
    unet = build_unet(spec).to(device, memory_format=torch.channels_last)
    text = build_text_encoder(spec).to(device)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    lat = torch.randn(batch, 4, spec.latent_size, spec.latent_size, device=device)
    ids = torch.randint(0, spec.vocab_size, (batch, spec.max_length), device=device)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = unet(lat, t, encoder_hidden_states=text(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred.float(), lat)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, count_parameters(unet) + count_parameters(text)


def vae_step_fn(spec: ModelSpec, batch: int, device: torch.device) -> tuple[Callable[[], None], int]:
    vae = build_vae(spec).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, spec.image_size, spec.image_size, device=device) * 2 - 1

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        loss = (rec.float() - x).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, count_parameters(vae)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--out", default="train_speed.json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    spec = TINY_SPEC if args.tiny else ModelSpec()
    rows = []
    for name, build, batch in (
        ("unet+text", unet_step_fn, args.unet_batch),
        ("vae", vae_step_fn, args.vae_batch),
    ):
        step, n_params = build(spec, batch, device)
        sec = time_steps(step, device, args.steps)
        rows.append(
            {
                "network": name,
                "params": n_params,
                "batch": batch,
                "step_ms": sec * 1e3,
                "samples_per_s": batch / sec,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            }
        )
    print(f"{'network':<10} {'params':>10} {'batch':>6} {'step ms':>9} {'samples/s':>10}")
    for r in rows:
        print(
            f"{r['network']:<10} {r['params']:>10,} {r['batch']:>6} {r['step_ms']:>9.1f} "
            f"{r['samples_per_s']:>10.0f}"
        )
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
