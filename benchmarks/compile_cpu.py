"""``runtime.compile`` on the CPU: one identity-LoRA step of the embedded model (batch 4, fp32, 2 threads),
eager against the UNet's convolution blocks compiled (``diffusion.compiled.compiled_blocks``), in a fresh
process each, so a second ``compiled`` run shows the compile time with Inductor's on-disk cache warm.

    python benchmarks/compile_cpu.py eager
    python benchmarks/compile_cpu.py compiled      # twice: cold, then with the cache

Prints (seconds of the first step: compilation included, median seconds of the next ``--steps``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dragdiff.config import LoraConfig
from dragdiff.diffusion.compiled import compiled_blocks
from dragdiff.diffusion.loading import EMBEDDED_MODEL_DIR
from dragdiff.diffusion.lora import hooked_lora


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("eager", "compiled"))
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(2)
    unet = UNet2DConditionModel.from_pretrained(EMBEDDED_MODEL_DIR, subfolder="unet").requires_grad_(False)
    cfg = LoraConfig()
    b, side = cfg.batch_size, unet.config.sample_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 4, side, side, generator=gen)  # (B, 4, h, w)
    cond = torch.randn(b, 77, unet.config.cross_attention_dim, generator=gen)
    t = torch.randint(0, 1000, (b,), generator=gen)
    target = torch.randn_like(x)
    with hooked_lora(unet, cfg) as named, compiled_blocks(unet, args.mode == "compiled"):
        params = list(named.values())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step() -> float:
            start = time.perf_counter()
            loss = F.mse_loss(unet(x, t, cond).sample, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - start

        first = step()
        rest = statistics.median(step() for _ in range(args.steps))
    print(f"{args.mode}: first step {first:.2f} s, then {rest:.3f} s a step (median of {args.steps})")


if __name__ == "__main__":
    main()
