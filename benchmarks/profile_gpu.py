"""Where the GPU time of an edit's loops goes, kernel by kernel (issue #6: CUDA graphs made them GPU-bound).

    python benchmarks/profile_gpu.py [--no-channels-last] [--out profile.txt]

On the random-weight SD-1.5-architecture pipeline of ``edit_sd15.py`` (512², fp16 weights, cuDNN autotuning
on), one LoRA training step of SPEC §2's recipe (batch 4, rank 16, AdamW) and one optimisation iteration
(batch 1, full UNet forward + backward to the latent) are each run eagerly a few times under
``torch.profiler``; the GPU time per step and the top kernels and operators by GPU time are printed. A CUDA
graph replays these same kernels, so their sum is what a replayed step costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_sd15 import build_pipeline  # noqa: E402

from dragdiff.config import LoraConfig  # noqa: E402
from dragdiff.diffusion.lora import lora_adapter  # noqa: E402

STEPS = 4


def profile(step, label: str, lines: list[str]) -> None:
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) / 1000 / STEPS  # ms per step
    lines.append(f"\n## {label}: {total:.1f} ms of GPU time per step ({STEPS} steps profiled)\n")
    lines.append("| kernel | ms/step | share | calls/step |\n|---|---:|---:|---:|")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:25]:
        ms = e.self_device_time_total / 1000 / STEPS
        lines.append(f"| {e.key[:90]} | {ms:.2f} | {100 * ms / total:.1f} % | {e.count // STEPS} |")
    ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.key.startswith("aten::")]
    lines.append("\n| operator (GPU time of its kernels) | ms/step |\n|---|---:|")
    for e in sorted(ops, key=lambda e: -e.device_time_total)[:20]:
        lines.append(f"| {e.key} | {e.device_time_total / 1000 / STEPS:.2f} |")


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    pipe = build_pipeline(False, device, torch.float16)
    unet = pipe.unet.requires_grad_(False)
    if not args.no_channels_last:
        unet.to(memory_format=torch.channels_last)
    lines = [f"# {torch.cuda.get_device_name(device)}, channels_last={not args.no_channels_last}"]
    cfg = LoraConfig()
    dim = unet.config.cross_attention_dim
    cond = torch.randn(cfg.batch_size, 77, dim, device=device, dtype=torch.float16)
    x = torch.randn(cfg.batch_size, 4, 64, 64, device=device)
    t = torch.randint(0, 1000, (cfg.batch_size,), device=device)
    with lora_adapter(unet, cfg) as params:
        for p in params:
            p.requires_grad_(True)
        wd = cfg.weight_decay
        # as dragdiff does on CUDA
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd, fused=True, capturable=True)

        def lora_step() -> None:
            with torch.autocast("cuda", dtype=torch.float16):
                pred = unet(x, t, cond).sample
            loss = F.mse_loss(pred.float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        profile(lora_step, "LoRA step (batch 4, fwd + bwd + AdamW)", lines)
    z = torch.randn(1, 4, 64, 64, device=device, requires_grad=True)

    def drag_step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            eps = unet(z, t[:1], cond[:1]).sample
        z.grad = None
        eps.float().square().mean().backward()

    profile(drag_step, "optimisation iteration (batch 1, full fwd + bwd to the latent)", lines)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
