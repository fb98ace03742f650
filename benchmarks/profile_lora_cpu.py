"""Where an identity-LoRA step of the embedded model spends its time on the CPU (issue #6's CPU target).

    python benchmarks/profile_lora_cpu.py            # ≈ 30 s: mean step time, then torch.profiler's top ops

One step of SPEC §2's recipe (batch 4, 32×32 latents, rank-16 LoRA on to_q/to_k/to_v/to_out.0, AdamW) on the
embedded model in fp32, with random latents and text embeddings (the cost does not depend on their values);
the VAE encoding is left out (the fast path encodes each crop once, outside the step).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from dragdiff.config import LoraConfig
from dragdiff.diffusion.loading import load_pipeline
from dragdiff.diffusion.lora import lora_adapter


def main() -> None:
    pipe = load_pipeline(None)
    unet = pipe.unet.float().requires_grad_(False)
    cfg = LoraConfig()
    side = unet.config.sample_size
    x = torch.randn(cfg.batch_size, unet.config.in_channels, side, side)
    t = torch.randint(0, 1000, (cfg.batch_size,))
    cond = torch.randn(cfg.batch_size, 77, unet.config.cross_attention_dim)
    with lora_adapter(unet, cfg, generator=torch.Generator().manual_seed(0)) as params:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step() -> None:
            loss = F.mse_loss(unet(x, t, cond).sample, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):  # warm-up
            step()
        start = time.perf_counter()
        for _ in range(4):
            step()
        mean = (time.perf_counter() - start) / 4
        with torch.profiler.profile() as prof:
            for _ in range(2):
                step()
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(3):
            unet(x, t, cond)
        forward = (time.perf_counter() - start) / 3
    print(
        f"threads {torch.get_num_threads()} | LoRA step {mean * 1000:.0f} ms (x {cfg.steps} = "
        f"{mean * cfg.steps:.1f} s) | forward alone, no grad {forward * 1000:.0f} ms"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
