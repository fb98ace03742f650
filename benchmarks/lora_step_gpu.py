"""What one identity-LoRA step costs on the GPU, variant by variant (issue #18), in one process.

    python benchmarks/lora_step_gpu.py --out lora_steps.json [--compile] [--profile]

On the random-weight SD-1.5-architecture pipeline of ``edit_sd15.py`` (512², fp16 weights), one training
step of SPEC §2's recipe (batch 4, rank 16, fused capturable AdamW, MSE on ε) is captured as a CUDA graph
the way ``train_lora`` does it (one eager step on a side stream, then the capture) and replayed; each
variant reports the median GPU time of a replayed step (CUDA events) and the capture's wall time:

    peft-autocast       peft's adapter under fp16 autocast, channels-last (the code before issue #18)
    hooked-autocast     the hooked adapter (``lora.hooked_lora``) under autocast: the adapter alone
    hooked-native       the hooked adapter, the fp16 UNet without autocast (the fast path since #18)
    hooked-native-nchw  the same in the contiguous layout: does channels-last still pay?
    sdpa-<backend>      hooked-native with that SDPA backend first (FLASH_ATTENTION, EFFICIENT_ATTENTION)
    drag-autocast / drag-native   an optimisation iteration's UNet work (batch 1, forward + backward to
                        the latent) under autocast and natively, for comparison
    compile-lora / compile-drag   (--compile) hooked-native / drag-native with the whole UNet under
                        ``torch.compile`` (compiled inside the adapter, then captured; ``compile_s``)
    compile-regional-lora / -drag  (--compile) each resnet and resampler block compiled instead

``--model DIR`` uses that diffusers folder's UNet (e.g. the embedded model) at its own sample size.

``--profile`` adds a kernel table of the hooked-native step (torch.profiler). The JSON is rewritten after
every variant, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_sd15 import build_pipeline  # noqa: E402

from dragdiff.config import LoraConfig  # noqa: E402
from dragdiff.diffusion.compiled import compiled_blocks  # noqa: E402
from dragdiff.diffusion.graphs import CapturedStep, on_side_stream  # noqa: E402
from dragdiff.diffusion.lora import hooked_lora, lora_adapter  # noqa: E402
from dragdiff.diffusion.unet import channels_last  # noqa: E402
from dragdiff.io import atomic_write_json  # noqa: E402

REPLAYS = 20


def _gn_nhwc(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """GroupNorm of a channels-last (N, C, H, W) tensor on its (N, HW, G, C/G) view: no layout copies."""
    n, c, h, w = x.shape
    xv = x.permute(0, 2, 3, 1).reshape(n, h * w, groups, c // groups).float()  # (N, HW, G, C/G)
    var, mean = torch.var_mean(xv, dim=(1, 3), keepdim=True, correction=0)
    y = ((xv - mean) * torch.rsqrt(var + eps)).reshape(n, h, w, c) * weight.float() + bias.float()
    return y.to(x.dtype).permute(0, 3, 1, 2)  # (N, C, H, W), channels-last strides


class NhwcGroupNorm(torch.nn.Module):
    """A GroupNorm module's parameters with ``_gn_nhwc`` (optionally compiled) for channels-last inputs."""

    def __init__(self, gn: torch.nn.GroupNorm, fn: Any) -> None:
        super().__init__()
        self.gn, self.fn = gn, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
            return self.gn(x)
        return self.fn(x, self.gn.num_groups, self.gn.weight, self.gn.bias, self.gn.eps)


@contextlib.contextmanager
def swapped_norms(unet: Any, fn: Any) -> Iterator[None]:
    """Every GroupNorm of ``unet`` replaced by ``NhwcGroupNorm(fn)`` for the block; put back on exit."""
    swaps = []
    for name, module in list(unet.named_modules()):
        if isinstance(module, torch.nn.GroupNorm):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            swaps.append((parent, child, module))
            setattr(parent, child, NhwcGroupNorm(module, fn))
    try:
        yield
    finally:
        for parent, child, module in swaps:
            setattr(parent, child, module)


def with_norms(gen_fn: Callable[[], Iterator[Callable[[], Any]]], unet: Any, fn: Any) -> Iterator[Any]:
    with swapped_norms(unet, fn):
        yield from gen_fn()


def replay_ms(step: Callable[[], Any], replays: int = REPLAYS) -> tuple[float, float]:
    """(median ms of a replayed step, seconds to warm up + capture) for ``step`` as ``train_lora`` runs it."""
    start = time.perf_counter()
    on_side_stream(step)  # eager: optimizer state, cuDNN/cuBLAS set-up
    graph = CapturedStep(step)
    graph()
    torch.cuda.synchronize()
    setup = time.perf_counter() - start
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), setup


@contextlib.contextmanager
def adapter(unet: Any, kind: str, cfg: LoraConfig) -> Iterator[list[torch.nn.Parameter]]:
    if kind == "peft":
        with lora_adapter(unet, cfg) as params:
            yield params
    else:
        with hooked_lora(unet, cfg) as named:
            yield list(named.values())


def lora_step(
    unet: Any, cfg: LoraConfig, kind: str, amp: bool, layout: bool, forward: Any = None
) -> Iterator[Callable[[], Any]]:
    """Yields a LoRA step closure with its adapter installed (the context ends when the generator does)."""
    device = unet.device
    dim = unet.config.cross_attention_dim
    b = cfg.batch_size
    cond = torch.randn(b, 77, dim, device=device, dtype=torch.float16)
    side = unet.config.sample_size
    x = torch.randn(b, 4, side, side, device=device)
    target = torch.randn_like(x)
    t = torch.randint(0, 1000, (b,), device=device)
    run = forward or unet
    with channels_last(unet, layout), adapter(unet, kind, cfg) as params:
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, capturable=True)

        def step() -> torch.Tensor:
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
            with ctx:
                pred = run(x if amp else x.half(), t, cond).sample
            loss = F.mse_loss(pred.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        yield step


def drag_step(unet: Any, amp: bool, forward: Any = None) -> Iterator[Callable[[], Any]]:
    device = unet.device
    cond = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, dtype=torch.float16)
    side = unet.config.sample_size
    z = torch.randn(1, 4, side, side, device=device, requires_grad=True)
    t = torch.full((1,), 681, device=device, dtype=torch.long)
    opt = torch.optim.Adam([z], lr=0.01, fused=True, capturable=True)
    with channels_last(unet, True):

        def step() -> torch.Tensor:
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
            with ctx:
                eps = (forward or unet)(z if amp else z.half(), t, cond).sample
            loss = eps.float().square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        yield step


def measure(gen: Iterator[Callable[[], Any]], sdpa: str | None = None) -> dict[str, float]:
    ctx: Any = contextlib.nullcontext()
    if sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = sdpa_kernel([getattr(SDPBackend, sdpa)], set_priority=True)
    with ctx:
        step = next(gen)
        torch.cuda.reset_peak_memory_stats()
        ms, setup = replay_ms(step)
        peak = torch.cuda.max_memory_allocated() / 2**30
    getattr(gen, "close", lambda: None)()
    return {"ms_per_step": ms, "setup_s": setup, "peak_gib": peak}


def measure_compiled(
    unet: Any, make_step: Callable[[Any], Iterator[Callable[[], Any]]], how: str
) -> dict[str, float]:
    """Compile (the whole UNet, or its convolution blocks as ``runtime.compile`` does: ``compiled_blocks``),
    run one eager step (compiles forward and backward), then capture and replay the step as ``measure``
    does; the row adds the compile's wall time."""
    torch._dynamo.reset()
    start = time.perf_counter()
    with compiled_blocks(unet, how == "blocks"):
        gen = make_step(torch.compile(unet) if how == "whole" else unet)
        try:
            step = next(gen)
            on_side_stream(step)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            row = measure(iter([step]))
            row["compile_s"] = compile_s
        finally:
            gen.close()
    return row


def profile_table(step: Callable[[], Any], steps: int = 4) -> str:
    """Top kernels of ``step`` run eagerly (the kernels its graph replays)."""
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) / 1000 / steps
    lines = [f"GPU time {total:.1f} ms/step", "| kernel | ms/step | calls/step |", "|---|---:|---:|"]
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:30]:
        lines.append(
            f"| {e.key[:100]} | {e.self_device_time_total / 1000 / steps:.2f} | {e.count // steps} |"
        )
    ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.key.startswith("aten::")]
    lines += ["", "| operator | ms/step (GPU) |", "|---|---:|"]
    for e in sorted(ops, key=lambda e: -e.device_time_total)[:25]:
        lines.append(f"| {e.key} | {e.device_time_total / 1000 / steps:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--model", default=None, help="a diffusers folder whose UNet to use")
    parser.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("lora_step_gpu.py needs a CUDA device (the variants are CUDA graphs)")
    device = torch.device("cuda")
    start = time.perf_counter()
    if args.model:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(args.model, subfolder="unet", torch_dtype=torch.float16)
        unet = unet.to(device).requires_grad_(False)
    else:
        unet = build_pipeline(False, device, torch.float16).unet.requires_grad_(False)
    cfg = LoraConfig()
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    report["build_s"] = time.perf_counter() - start
    rows: dict[str, Any] = {}
    report["rows"] = rows

    def save() -> None:
        if args.out:
            atomic_write_json(args.out, report)

    variants: list[tuple[str, Callable[[], Iterator[Callable[[], Any]]], str | None]] = [
        ("peft-autocast", lambda: lora_step(unet, cfg, "peft", True, True), None),
        ("hooked-autocast", lambda: lora_step(unet, cfg, "hooked", True, True), None),
        ("hooked-native", lambda: lora_step(unet, cfg, "hooked", False, True), None),
        ("hooked-native-nchw", lambda: lora_step(unet, cfg, "hooked", False, False), None),
        ("sdpa-FLASH_ATTENTION", lambda: lora_step(unet, cfg, "hooked", False, True), "FLASH_ATTENTION"),
        (
            "sdpa-EFFICIENT_ATTENTION",
            lambda: lora_step(unet, cfg, "hooked", False, True),
            "EFFICIENT_ATTENTION",
        ),
        (
            "gn-nhwc",
            lambda: with_norms(lambda: lora_step(unet, cfg, "hooked", False, True), unet, _gn_nhwc),
            None,
        ),
        ("drag-autocast", lambda: drag_step(unet, True), None),
        ("drag-native", lambda: drag_step(unet, False), None),
    ]
    only = set(args.only.split(",")) if args.only else None
    for name, make, sdpa in variants:
        if only is not None and name not in only:
            continue
        try:
            rows[name] = measure(make(), sdpa)
        except Exception as exc:  # one broken variant must not lose the others
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(name, rows[name], flush=True)
        save()
    if args.profile:
        gen = lora_step(unet, cfg, "hooked", False, True)
        report["profile_hooked_native"] = profile_table(next(gen))
        gen.close()
        print(report["profile_hooked_native"], flush=True)
        save()
    start = time.perf_counter()
    compiled_gn = torch.compile(_gn_nhwc, dynamic=True)
    for name, make in [
        (
            "gn-compiled",
            lambda: with_norms(lambda: lora_step(unet, cfg, "hooked", False, True), unet, compiled_gn),
        ),
        ("drag-native-gn-compiled", lambda: with_norms(lambda: drag_step(unet, False), unet, compiled_gn)),
        ("drag-autocast-gn-compiled", lambda: with_norms(lambda: drag_step(unet, True), unet, compiled_gn)),
    ]:
        if only is not None and name not in only:
            continue
        try:
            rows[name] = measure(make())
            rows[name]["since_compile_s"] = time.perf_counter() - start
        except Exception as exc:
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
        print(name, rows[name], flush=True)
        save()
    if args.compile:
        torch._dynamo.config.automatic_dynamic_shapes = False  # batch 4 and batch 1: two static graphs
        torch._dynamo.config.recompile_limit = 64  # regional: one graph per block shape

        def lora(fwd: Any) -> Iterator[Callable[[], Any]]:
            return lora_step(unet, cfg, "hooked", False, True, forward=fwd)

        compile_variants: list[tuple[str, Callable[[Any], Iterator[Callable[[], Any]]], str]] = [
            ("compile-regional-lora", lora, "blocks"),
            ("compile-regional-drag", lambda fwd: drag_step(unet, False, forward=fwd), "blocks"),
            ("compile-lora", lora, "whole"),
            ("compile-drag", lambda fwd: drag_step(unet, False, forward=fwd), "whole"),
        ]
        for name, make_step, how in compile_variants:
            if only is not None and name not in only:
                continue
            try:
                rows[name] = measure_compiled(unet, make_step, how)
            except Exception as exc:
                rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
            print(name, rows[name], flush=True)
            save()
    report["complete"] = True
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
