# diffusers' model and pipeline classes are not visible to mypy as nn.Module subclasses (its lazy imports):
# mypy: disable-error-code="attr-defined,operator,arg-type"
"""Training recipe of the embedded model: VAE first, then UNet + text encoder on rescaled latents.

Run directory layout (everything resumable, written atomically):
  vae_state.pt    VAE training state (weights, optimizer, step, RNG) — un-rescaled weights
  vae/            the finished VAE as a diffusers folder, latents rescaled so scaling_factor 0.18215 is right
  unet_state.pt   UNet + text encoder training state (weights, EMA, optimizer, step, RNG)
  log.jsonl       one JSON object per logged step: phase, step, loss, lr, samples/s, minutes
  samples/        sample grids for held-out captions
``export_pipeline`` writes the EMA weights as an fp16 StableDiffusionPipeline folder (UNet in shards).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from dragdiff import io
from dragdiff.config import ConfigError
from dragdiff.io import atomic_dir
from dragdiff.metrics import psnr as image_psnr
from dragdiff.model.arch import (
    SD_SCALING_FACTOR,
    TINY_SPEC,
    ModelSpec,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
)
from dragdiff.model.data import to_uint8
from dragdiff.model.tokenizer import DEFAULT_MERGES

log = logging.getLogger(__name__)

EVAL_SEED = 987_654_321  # held-out scenes and captions come from this seed; training never uses it
MAX_SHARD = "14MB"  # every shipped file stays under 15 MB


class ImageSource(Protocol):
    """What training needs from the data: ``dragdiff.model.data.TrainingData`` or a test stand-in."""

    def sample(
        self, n: int, generator: torch.Generator, device: torch.device | str
    ) -> tuple[Tensor, list[str]]: ...  # (n, 3, S, S) in [-1, 1], n captions


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of both phases. Defaults: the H100 recipe used for the shipped model."""

    spec: ModelSpec = ModelSpec()
    seed: int = 0
    # VAE: L1 + multi-scale gradient loss (perceptual substitute, see docs/model.md) + small KL
    vae_steps: int = 100_000  # upper bound; the wall-clock budget usually ends the phase
    vae_batch: int = 64
    vae_lr: float = 3e-4
    vae_warmup: int = 100
    kl_weight: float = 1e-6  # on the KL summed over latent elements (the SD-1.x autoencoder's weight)
    grad_weight: float = 1.0
    vae_pool: int = 16_384  # images kept on the device, a few refreshed every step
    # UNet + text encoder (trained jointly from scratch): eps-MSE, AdamW, warm-up, EMA
    unet_steps: int = 100_000
    unet_batch: int = 256
    unet_lr: float = 4e-4
    unet_warmup: int = 300
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # empty caption ~10% of the time, for classifier-free guidance
    # Min-SNR-γ loss weighting (Hang et al. 2023): per-sample weight min(SNR, γ)/SNR for ε-prediction, so the
    # many easy low-noise timesteps do not dominate the gradient. 0 = off (plain ε-MSE, sessions 1-2).
    min_snr_gamma: float = 0.0
    # Anneal the UNet's learning rate linearly to this value over the chunk's wall-clock budget (a last chunk
    # before shipping); None = constant after warm-up. Chunks end on time, so the schedule follows time.
    unet_lr_final: float | None = None
    unet_pool: int = 65_536  # posterior (mean, std) of this many images kept on the device
    refresh: int = 32  # pool entries replaced by fresh samples per step
    refresh_every: int = 16
    pool_seconds: float = 45.0  # at most this long filling a pool (it is then smaller)
    # bookkeeping
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_minutes: float = 3.0

    def __post_init__(self) -> None:
        for name in ("vae_batch", "unet_batch", "vae_pool", "unet_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.caption_dropout < 1:
            raise ConfigError(f"train.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.refresh < 0:
            raise ConfigError(f"train.refresh must be >= 0, got {self.refresh}")
        if self.min_snr_gamma < 0:
            raise ConfigError(f"train.min_snr_gamma must be >= 0 (0 = off), got {self.min_snr_gamma}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.unet_lr <= 0:
            raise ConfigError(f"train.unet_lr must be > 0, got {self.unet_lr}")


# ------------------------------------------------------------------------------------------ utilities


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically: readable like a plain new file, no temporary left behind on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        torch.save(obj, tmp)


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def warmup_lr(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / max(1, warmup))


def tokenize(tokenizer: CLIPTokenizer, captions: Sequence[str], device: torch.device) -> Tensor:
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids.to(device)  # (n, 77)


class Pool:
    """A fixed-size buffer of training examples on the device; ``refresh`` entries are replaced per draw.

    Replacement happens every ``refresh_every`` draws (``refresh * refresh_every`` at once), since drawing
    scenes on the host and copying them over synchronises the device.

    Decouples step time from data generation: the model sees fresh data at ``refresh / batch`` of its
    consumption rate while drawing batches uniformly from a large, constantly renewed pool.
    """

    def __init__(
        self,
        fill: Callable[[int], tuple[Tensor, Tensor]],
        size: int,
        refresh: int,
        generator: torch.Generator,
        chunk: int = 512,
        max_seconds: float = math.inf,
        refresh_every: int = 1,
    ) -> None:
        """Fill up to ``size`` entries, stopping early (after at least one chunk) past ``max_seconds``."""
        self.fill, self.refresh, self.gen = fill, refresh, generator
        self.refresh_every, self.draws = refresh_every, 0
        t0 = time.monotonic()
        parts = [fill(min(chunk, size))]
        filled = parts[0][0].shape[0]
        while filled < size and time.monotonic() - t0 < max_seconds:
            parts.append(fill(min(chunk, size - filled)))
            filled += parts[-1][0].shape[0]
        self.data = torch.cat([p[0] for p in parts])  # (size, ...)
        self.ids = torch.cat([p[1] for p in parts])  # (size, 77)
        self.size = filled
        self.fill_rate = filled / max(time.monotonic() - t0, 1e-9)
        log.info("pool: %d entries in %.1f s (%.0f/s)", filled, time.monotonic() - t0, self.fill_rate)

    def draw(self, n: int) -> tuple[Tensor, Tensor]:
        device = self.data.device
        idx = torch.randint(self.size, (n,), generator=self.gen, device=device)
        batch = self.data[idx], self.ids[idx]
        self.draws += 1
        if self.refresh and self.draws % self.refresh_every == 0:  # few large refreshes: few host syncs
            k = self.refresh * self.refresh_every
            slots = torch.randint(self.size, (k,), generator=self.gen, device=device)
            new, new_ids = self.fill(k)
            self.data[slots], self.ids[slots] = new, new_ids
        return batch


def _autocast(device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# ------------------------------------------------------------------------------------------ VAE phase


def gradient_loss(rec: Tensor, target: Tensor, scales: int = 3) -> Tensor:
    """Multi-scale L1 between image gradients: keeps edges and small text sharp (LPIPS substitute)."""
    total = rec.new_zeros(())
    for s in range(scales):
        if s:
            rec, target = F.avg_pool2d(rec, 2), F.avg_pool2d(target, 2)
        for dim in (-1, -2):
            total = total + (rec.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return total / scales


def vae_loss(
    vae: AutoencoderKL, x: Tensor, cfg: TrainConfig, generator: torch.Generator
) -> dict[str, Tensor]:
    """L1 + multi-scale gradient L1 + KL (summed over latent elements, averaged over the batch)."""
    posterior = vae.encode(x).latent_dist
    rec = vae.decode(posterior.sample(generator=generator)).sample.float()
    parts = {"l1": (rec - x).abs().mean(), "grad": gradient_loss(rec, x), "kl": posterior.kl().mean()}
    parts["loss"] = parts["l1"] + cfg.grad_weight * parts["grad"] + cfg.kl_weight * parts["kl"]
    return parts


def train_vae(
    run_dir: Path,
    data: ImageSource,
    cfg: TrainConfig,
    device: torch.device,
    max_minutes: float,
    progress: bool = False,
) -> AutoencoderKL:
    """Train (or resume) the VAE for at most ``max_minutes``, then write the rescaled ``vae/`` folder."""
    t0 = time.monotonic()
    state_path = run_dir / "vae_state.pt"
    vae = build_vae(cfg.spec).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    data_gen = torch.Generator().manual_seed(cfg.seed + 100)  # on the host: drawing scenes never syncs
    step = 0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        if state.get("rng") is not None:  # None when seeded from an exported model (--init-from)
            gen.set_state(state["rng"].cpu())
        data_gen.set_state(state["data_rng"].cpu())
        step = state["step"]
        log.info("resumed VAE at step %d", step)

    def fill(n: int) -> tuple[Tensor, Tensor]:
        images, _ = data.sample(n, generator=data_gen, device=device)
        return to_uint8(images), torch.zeros(n, 1, dtype=torch.long, device=device)

    pool = Pool(
        fill, cfg.vae_pool, cfg.refresh, gen, max_seconds=cfg.pool_seconds, refresh_every=cfg.refresh_every
    )
    JsonlLog(run_dir / "log.jsonl").write(phase="vae_pool", size=pool.size, images_per_s=pool.fill_rate)
    jlog = JsonlLog(run_dir / "log.jsonl")
    vae.train()
    tick, seen = time.monotonic(), 0
    bar = tqdm(desc="VAE", unit="step", initial=step, disable=not progress)
    while step < cfg.vae_steps and time.monotonic() - t0 < max_minutes * 60:
        u8, _ = pool.draw(cfg.vae_batch)
        x = (u8.float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = warmup_lr(step, cfg.vae_lr, cfg.vae_warmup)
        with _autocast(device):
            parts = vae_loss(vae, x, cfg, gen)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        seen += cfg.vae_batch
        bar.update()
        if step % cfg.log_every == 0:
            now = time.monotonic()
            rate = seen / max(now - tick, 1e-9)
            values = {k: v.item() for k, v in parts.items()}
            jlog.write(
                phase="vae",
                step=step,
                **values,
                lr=opt.param_groups[0]["lr"],
                samples_per_s=rate,
                minutes=(now - t0) / 60,
            )
            log.info("vae step %d loss %.4f (%.0f samples/s)", step, values["loss"], rate)
            bar.set_postfix(loss=f"{values['loss']:.4f}", samples_per_s=f"{rate:.0f}")
            tick, seen = now, 0
    bar.close()
    atomic_save(
        {
            "vae": vae.state_dict(),
            "opt": opt.state_dict(),
            "rng": gen.get_state(),
            "data_rng": data_gen.get_state(),
            "step": step,
        },
        state_path,
    )
    vae.eval()
    scale = rescale_latents(vae, data, torch.Generator(device).manual_seed(cfg.seed + 1), device)
    jlog.write(phase="vae_rescale", step=step, latent_scale=scale, minutes=(time.monotonic() - t0) / 60)
    vae = vae.to(memory_format=torch.contiguous_format)
    with atomic_dir(run_dir / "vae") as tmp:
        vae.save_pretrained(tmp)
    return vae


@torch.no_grad()
def latent_std(
    vae: AutoencoderKL,
    data: ImageSource,
    generator: torch.Generator,
    device: torch.device,
    n: int = 2048,
    chunk: int = 256,
) -> float:
    """Standard deviation of posterior samples (what the UNet is trained on) over ``n`` fresh images."""
    zs = []
    data_gen = torch.Generator().manual_seed(EVAL_SEED + 2)
    for i in range(0, n, chunk):
        images, _ = data.sample(min(chunk, n - i), generator=data_gen, device=device)
        zs.append(vae.encode(images.to(vae.dtype)).latent_dist.sample(generator=generator).float())
    return torch.cat(zs).std().item()


@torch.no_grad()
def fold_latent_scale(vae: AutoencoderKL, k: float) -> None:
    """Multiply the VAE's latent space by ``k`` without changing encode→decode.

    quant_conv emits [mean, logvar]: mean channels scale by k, logvar gains 2 ln k (std scales by k);
    post_quant_conv reads z' = k z, so its weights divide by k.
    """
    c = vae.config.latent_channels
    vae.quant_conv.weight[:c] *= k
    vae.quant_conv.bias[:c] *= k
    vae.quant_conv.bias[c:] += 2 * math.log(k)
    vae.post_quant_conv.weight /= k


def rescale_latents(
    vae: AutoencoderKL, data: ImageSource, generator: torch.Generator, device: torch.device, n: int = 2048
) -> float:
    """Fold a factor into the VAE so that latents × 0.18215 have unit variance; returns the factor."""
    std = latent_std(vae, data, generator, device, n)
    k = 1.0 / (SD_SCALING_FACTOR * std)
    fold_latent_scale(vae, k)
    log.info("latent std %.4f -> folded factor %.4f into the VAE", std, k)
    return k


# ------------------------------------------------------------------------------------------ UNet phase


@dataclass
class UNetTrainer:
    """UNet + text encoder, their EMA and optimizer: the state a checkpoint holds."""

    unet: UNet2DConditionModel
    text: CLIPTextModel
    ema: EMAModel
    opt: torch.optim.Optimizer
    step: int = 0

    @classmethod
    def build(cls, cfg: TrainConfig, device: torch.device) -> UNetTrainer:
        unet = build_unet(cfg.spec).to(device, memory_format=torch.channels_last)
        text = build_text_encoder(cfg.spec).to(device)
        params = list(unet.parameters()) + list(text.parameters())
        ema = EMAModel(params, decay=cfg.ema_decay, foreach=True)
        opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
        return cls(unet, text, ema, opt)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.unet.parameters()) + list(self.text.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {
            "unet": self.unet.state_dict(),
            "text": self.text.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.text.load_state_dict(state["text"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights into the live models (for sampling and export)."""
        params = self.params
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)


def min_snr_weight(alphas_t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-γ weight of the ε-MSE at each sample's timestep: min(SNR, γ) / SNR, SNR = ᾱ / (1 − ᾱ)."""
    snr = alphas_t / (1 - alphas_t)
    return snr.clamp(max=gamma) / snr


def eps_loss(
    tr: UNetTrainer,
    lat: Tensor,
    ids: Tensor,
    alphas: Tensor,
    gen: torch.Generator,
    min_snr_gamma: float = 0.0,
) -> Tensor:
    """Epsilon-prediction MSE at uniformly drawn timesteps (DDPM objective, SD-1.x parametrisation),
    optionally Min-SNR-γ weighted per sample."""
    n = lat.shape[0]
    t = torch.randint(0, alphas.shape[0], (n,), generator=gen, device=lat.device)
    noise = torch.randn(lat.shape, generator=gen, device=lat.device)
    a = alphas[t].view(n, 1, 1, 1)
    noisy = (a.sqrt() * lat + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
    cond = tr.text(ids)[0]  # (n, 77, D)
    pred = tr.unet(noisy, t, encoder_hidden_states=cond).sample
    if min_snr_gamma <= 0:
        return F.mse_loss(pred.float(), noise)
    per_sample = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))
    return (min_snr_weight(alphas[t].float(), min_snr_gamma) * per_sample).mean()


def train_unet(
    run_dir: Path,
    data: ImageSource,
    cfg: TrainConfig,
    device: torch.device,
    tokenizer: CLIPTokenizer,
    max_minutes: float,
    sample_captions: Sequence[str] = (),
    progress: bool = False,
) -> UNetTrainer:
    """Train (or resume) UNet + text encoder on rescaled latents for at most ``max_minutes``."""
    t0 = time.monotonic()
    vae = AutoencoderKL.from_pretrained(run_dir / "vae").to(device).eval().requires_grad_(False)
    tr = UNetTrainer.build(cfg, device)
    gen = torch.Generator(device).manual_seed(cfg.seed + 2)
    data_gen = torch.Generator().manual_seed(cfg.seed + 200)
    state_path = run_dir / "unet_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        tr.load_state_dict(state)
        if state.get("rng") is not None:  # None when seeded from an exported model (--init-from)
            gen.set_state(state["rng"].cpu())
        data_gen.set_state(state["data_rng"].cpu())
        log.info("resumed UNet at step %d", tr.step)
    sf = vae.config.scaling_factor
    empty = tokenize(tokenizer, [""], device)  # (1, 77)

    @torch.no_grad()
    def fill(n: int) -> tuple[Tensor, Tensor]:
        images, captions = data.sample(n, generator=data_gen, device=device)
        with _autocast(device):
            dist = vae.encode(images).latent_dist
        stats = torch.cat([dist.mean, dist.std]).float().to(torch.float16)  # (2n, C, h, w)
        return stats.view(2, n, *stats.shape[1:]).transpose(0, 1), tokenize(tokenizer, captions, device)

    pool = Pool(
        fill, cfg.unet_pool, cfg.refresh, gen, max_seconds=cfg.pool_seconds, refresh_every=cfg.refresh_every
    )
    JsonlLog(run_dir / "log.jsonl").write(phase="unet_pool", size=pool.size, images_per_s=pool.fill_rate)
    alphas = build_scheduler().alphas_cumprod.to(device)
    jlog = JsonlLog(run_dir / "log.jsonl")
    tick, seen, last_ckpt = time.monotonic(), 0, time.monotonic()
    tr.unet.train()
    tr.text.train()
    bar = tqdm(desc="UNet", unit="step", initial=tr.step, disable=not progress)
    while tr.step < cfg.unet_steps and time.monotonic() - t0 < max_minutes * 60:
        stats, ids = pool.draw(cfg.unet_batch)
        mean, std = stats[:, 0].float(), stats[:, 1].float()
        lat = (mean + std * torch.randn(mean.shape, generator=gen, device=device)) * sf
        drop = torch.rand(ids.shape[0], generator=gen, device=device) < cfg.caption_dropout
        ids = torch.where(drop[:, None], empty, ids)
        lr = warmup_lr(tr.step, cfg.unet_lr, cfg.unet_warmup)
        if cfg.unet_lr_final is not None:
            done = min(1.0, (time.monotonic() - t0) / max(max_minutes * 60, 1e-9))
            lr = cfg.unet_lr_final + (lr - cfg.unet_lr_final) * (1.0 - done)
        for g in tr.opt.param_groups:
            g["lr"] = lr
        with _autocast(device):
            loss = eps_loss(tr, lat, ids, alphas, gen, cfg.min_snr_gamma)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.params, cfg.grad_clip)
        tr.opt.step()
        tr.ema.step(tr.params)
        tr.step += 1
        seen += cfg.unet_batch
        bar.update()
        if tr.step % cfg.log_every == 0:
            now = time.monotonic()
            rate = seen / max(now - tick, 1e-9)
            jlog.write(
                phase="unet",
                step=tr.step,
                loss=loss.item(),
                lr=tr.opt.param_groups[0]["lr"],
                samples_per_s=rate,
                minutes=(now - t0) / 60,
            )
            log.info("unet step %d loss %.4f (%.0f samples/s)", tr.step, loss.item(), rate)
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_per_s=f"{rate:.0f}")
            tick, seen = now, 0
        if cfg.sample_every and tr.step % cfg.sample_every == 0 and sample_captions:
            save_samples(tr, vae, tokenizer, sample_captions, run_dir / "samples" / f"step_{tr.step:06d}.png")
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            atomic_save(
                {**tr.state_dict(), "rng": gen.get_state(), "data_rng": data_gen.get_state()}, state_path
            )
            last_ckpt = time.monotonic()
    bar.close()
    atomic_save({**tr.state_dict(), "rng": gen.get_state(), "data_rng": data_gen.get_state()}, state_path)
    if sample_captions:  # the chunk's last grid
        save_samples(tr, vae, tokenizer, sample_captions, run_dir / "samples" / f"step_{tr.step:06d}.png")
    return tr


# ------------------------------------------------------------------------------------------ export


def assemble_pipeline(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text: CLIPTextModel, tokenizer: CLIPTokenizer
) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(pipe: StableDiffusionPipeline, out_dir: Path) -> Path:
    """Write ``pipe`` in fp16 as a diffusers folder; every weight file ≤ 14 MB (UNet sharded)."""
    import copy

    half = copy.deepcopy(pipe)
    half.to(torch.float16)
    for m in (half.unet, half.vae):
        m.to(memory_format=torch.contiguous_format)
    with atomic_dir(Path(out_dir)) as tmp:
        half.save_pretrained(tmp, safe_serialization=True, max_shard_size=MAX_SHARD)
    return Path(out_dir)


def export_run(
    run_dir: Path, tokenizer: CLIPTokenizer, out_dir: Path, cfg: TrainConfig, device: torch.device
) -> Path:
    """EMA weights of the run → fp16 StableDiffusionPipeline folder at ``out_dir``."""
    vae = AutoencoderKL.from_pretrained(run_dir / "vae")
    tr = UNetTrainer.build(cfg, torch.device("cpu"))
    tr.load_state_dict(torch.load(run_dir / "unet_state.pt", map_location="cpu", weights_only=False))
    with tr.ema_weights():
        pipe = assemble_pipeline(tr.unet, vae, tr.text, tokenizer)
        return export_pipeline(pipe, out_dir)


# ------------------------------------------------------------------------------------------ samples, eval


def image_grid(images: Sequence[Image.Image], cols: int) -> Image.Image:
    w, h = images[0].size
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid


def save_image(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_save_image(image, path)


@torch.no_grad()
def generate_grid(
    pipe: StableDiffusionPipeline,
    captions: Sequence[str],
    seed: int = 0,
    steps: int = 25,
    guidance: float = 5.0,
    cols: int = 8,
) -> Image.Image:
    """Text-to-image samples for ``captions`` (DDIM, classifier-free guidance) pasted into a grid."""
    gen = torch.Generator(pipe.device).manual_seed(seed)
    out = pipe(
        list(captions), num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="pil"
    ).images
    return image_grid(out, cols=min(cols, len(out)))


def save_samples(
    tr: UNetTrainer, vae: AutoencoderKL, tokenizer: CLIPTokenizer, captions: Sequence[str], path: Path
) -> None:
    tr.unet.eval()
    tr.text.eval()
    with tr.ema_weights():
        pipe = assemble_pipeline(tr.unet, vae, tr.text, tokenizer)
        pipe.set_progress_bar_config(disable=True)
        with _autocast(tr.unet.device):
            grid = generate_grid(pipe, captions)
    save_image(grid, path)
    tr.unet.train()
    tr.text.train()


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [-1, 1]: the benchmark's PSNR of each in [0, 1]."""
    pairs = zip((a.float() + 1) / 2, (b.float() + 1) / 2, strict=True)  # [-1, 1] -> [0, 1], peak 1
    return torch.tensor([image_psnr(x[None], y[None]) for x, y in pairs])  # (B,)


@torch.no_grad()
def evaluate_vae(
    vae: AutoencoderKL, data: ImageSource, device: torch.device, n: int = 256, chunk: int = 64
) -> dict[str, float]:
    """Reconstruction PSNR (posterior mean) on held-out images, and LPIPS when dragdiff.bench.lpips loads."""
    gen = torch.Generator().manual_seed(EVAL_SEED)
    lpips_fn = _try_lpips(device)
    psnrs, lp = [], []
    for i in range(0, n, chunk):
        x, _ = data.sample(min(chunk, n - i), generator=gen, device=device)
        x = x.to(vae.dtype)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        psnrs.append(psnr(rec, x))
        if lpips_fn is not None:
            lp.append(lpips_fn(rec.float(), x.float()).flatten())
    out = {"vae_psnr_db": torch.cat(psnrs).mean().item(), "n_images": float(n)}
    if lp:
        out["vae_lpips"] = torch.cat(lp).mean().item()
    return out


def _try_lpips(device: torch.device) -> Callable[[Tensor, Tensor], Tensor] | None:
    try:
        from dragdiff.bench.lpips import LPIPS  # type: ignore[import-not-found]

        return LPIPS().to(device).eval()  # type: ignore[no-any-return]
    except Exception as exc:  # the bench area or its weights may be missing: PSNR alone is still reported
        log.warning("LPIPS unavailable (%s); reporting PSNR only", exc)
        return None


def heldout_captions(data: ImageSource, n: int, device: torch.device) -> list[str]:
    _, captions = data.sample(n, generator=torch.Generator().manual_seed(EVAL_SEED + 1), device=device)
    return captions


def evaluate_pipeline(
    model_dir: Path,
    data: ImageSource,
    device: torch.device,
    out_dir: Path,
    n_images: int = 256,
    n_captions: int = 16,
) -> dict[str, Any]:
    """Model-card numbers for a pipeline folder: VAE PSNR/LPIPS and a sample grid for held-out captions."""
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    metrics: dict[str, Any] = evaluate_vae(pipe.vae, data, device, n=n_images)
    captions = heldout_captions(data, n_captions, device)
    grid = generate_grid(pipe, captions)
    save_image(grid, Path(out_dir) / "heldout_grid.png")
    metrics["heldout_captions"] = captions
    io.atomic_write_json(Path(out_dir) / "eval.json", metrics)
    return metrics


# ------------------------------------------------------------------------------------------ CLI


def make_data(size: int, emoji_pack: Path | None) -> ImageSource:
    from dragdiff.model.data import TrainingData

    return TrainingData(size=size, emoji_pack=emoji_pack)  # type: ignore[no-any-return]


def load_or_build_tokenizer(run_dir: Path, bpe_cache: Path, merges: int) -> CLIPTokenizer:
    """The run's tokenizer (saved in ``run_dir/tokenizer``), built from the CLIP BPE file on first use."""
    from dragdiff.model.tokenizer import build_tokenizer, find_bpe_source

    path = run_dir / "tokenizer"
    if (path / "tokenizer.json").exists():
        return CLIPTokenizer.from_pretrained(path)
    tok = build_tokenizer(find_bpe_source(bpe_cache), merges)
    with atomic_dir(path) as tmp:
        tok.save_pretrained(tmp)
    return tok


def seed_run_from_export(run_dir: Path, export_dir: Path, cfg: TrainConfig) -> None:
    """Start a run from an exported pipeline folder (weights only: fresh optimizer; EMA restarts there)."""
    export_dir = Path(export_dir)
    if not (export_dir / "model_index.json").exists():
        raise ConfigError(f"--init-from needs an exported pipeline folder, got {export_dir}")
    CLIPTokenizer.from_pretrained(export_dir / "tokenizer").save_pretrained(run_dir / "tokenizer")
    vae = AutoencoderKL.from_pretrained(export_dir / "vae", dtype=torch.float32)
    with atomic_dir(run_dir / "vae") as tmp:
        vae.save_pretrained(tmp)
    unet = UNet2DConditionModel.from_pretrained(export_dir / "unet", dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(export_dir / "text_encoder", dtype=torch.float32)
    spec = replace(cfg.spec, vocab_size=text.config.vocab_size)
    tr = UNetTrainer.build(replace(cfg, spec=spec), torch.device("cpu"))
    tr.unet.load_state_dict(unet.state_dict())
    tr.text.load_state_dict(text.state_dict())
    tr.ema = EMAModel(tr.params, decay=cfg.ema_decay, foreach=True)
    rng = torch.Generator().manual_seed(cfg.seed + 3).get_state()
    # the noise generator lives on the training device, whose RNG state differs in size: start it fresh there
    atomic_save({**tr.state_dict(), "rng": None, "data_rng": rng}, run_dir / "unet_state.pt")
    log.info("seeded %s from %s", run_dir, export_dir)


def run_training(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = TrainConfig(spec=TINY_SPEC if args.tiny else ModelSpec(), seed=args.seed)
    overrides = {
        k: v
        for k, v in vars(args).items()
        if k in TrainConfig.__dataclass_fields__ and v is not None and k not in ("spec", "seed")
    }
    cfg = replace(cfg, **overrides)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.init_from and not (run_dir / "unet_state.pt").exists():
        seed_run_from_export(run_dir, Path(args.init_from), cfg)
    tokenizer = load_or_build_tokenizer(run_dir, Path(args.bpe_cache), args.merges)
    cfg = replace(
        cfg, spec=replace(cfg.spec, vocab_size=len(tokenizer))
    )  # the vocabulary follows the tokenizer
    data = make_data(cfg.spec.image_size, Path(args.emoji_pack) if args.emoji_pack else None)
    captions = heldout_captions(data, args.eval_captions, device) if cfg.sample_every else []
    if args.phase in ("vae", "all"):
        train_vae(run_dir, data, cfg, device, args.vae_minutes, progress=True)
    if args.phase in ("unet", "all"):
        train_unet(run_dir, data, cfg, device, tokenizer, args.unet_minutes, captions, progress=True)
    if args.export:
        export_run(run_dir, tokenizer, Path(args.export), cfg, device)
        if args.eval:
            metrics = evaluate_pipeline(
                Path(args.export),
                data,
                device,
                run_dir,
                n_images=args.eval_images,
                n_captions=args.eval_captions,
            )
            log.info("eval: %s", metrics)
            print(json.dumps(metrics, indent=2))
    return 0


def register_train(sub: Any) -> None:
    """Add ``dragdiff train-model`` to the CLI's subparsers."""
    p = sub.add_parser("train-model", help="train the embedded SD-1.x-format model (VAE, then UNet + text)")
    p.add_argument(
        "--run-dir", default="runs/model", help="checkpoints, logs and samples (resumed if present)"
    )
    p.add_argument("--phase", choices=("vae", "unet", "all", "none"), default="all")
    p.add_argument("--vae-minutes", type=float, default=3.0, help="wall-clock budget of the VAE phase")
    p.add_argument("--unet-minutes", type=float, default=5.0, help="wall-clock budget of this UNet chunk")
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--vae-batch", type=int, default=None)
    p.add_argument("--unet-batch", type=int, default=None)
    p.add_argument("--vae-pool", type=int, default=None)
    p.add_argument("--unet-pool", type=int, default=None)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--unet-lr", type=float, default=None, help="peak AdamW learning rate of the UNet phase")
    p.add_argument("--unet-warmup", type=int, default=None, help="linear warm-up steps of the UNet phase")
    p.add_argument(
        "--unet-lr-final", type=float, default=None, help="anneal the lr linearly to this over this chunk"
    )
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument(
        "--min-snr-gamma", type=float, default=None, help="Min-SNR-γ loss weighting of the UNet (0 = off)"
    )
    p.add_argument("--refresh", type=int, default=None, help="fresh pool entries per step")
    p.add_argument("--refresh-every", type=int, default=None, help="steps between pool refreshes")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="tiny widths for a CPU smoke run")
    p.add_argument("--emoji-pack", default=None, help="emoji .npz from `dragdiff make-data` (optional)")
    p.add_argument("--merges", type=int, default=DEFAULT_MERGES, help="CLIP BPE merges kept (vocab 514+K)")
    p.add_argument("--bpe-cache", default=".carry/cache", help="folder with open_clip_torch's BPE vocabulary")
    p.add_argument("--export", default=None, help="write the EMA weights as an fp16 diffusers folder here")
    p.add_argument("--eval", action="store_true", help="after export: VAE PSNR/LPIPS + held-out sample grid")
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--eval-captions", type=int, default=16)
    p.add_argument(
        "--init-from", default=None, help="exported folder to continue from if the run has no state"
    )
    p.add_argument("--device", default=None)
    p.set_defaults(func=run_training)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dragdiff.model.train [train-model] ...``: the same command without the CLI dispatcher."""
    parser = argparse.ArgumentParser(prog="dragdiff-train")
    register_train(parser.add_subparsers(dest="command"))
    argv = list(argv if argv is not None else sys.argv[1:])
    if not argv or argv[0] != "train-model":
        argv = ["train-model", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
