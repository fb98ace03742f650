# diffusers' model classes are not visible to mypy as nn.Module subclasses (its lazy imports):
# mypy: disable-error-code="attr-defined,operator,arg-type"
"""Fine-tune the VAE **decoder** of a shipped model with its encoder frozen (issue #17).

The encoder and ``quant_conv`` are never trained, so the latent space — and the UNet trained on it — stays
valid, as Stable Diffusion's ft-MSE / ft-EMA decoders were made. Trained: ``post_quant_conv``, ``decoder.*``.

Loss (images in [−1, 1]; ``rec`` = decode(z), z the frozen encoder's posterior mean or a sample of it):
  l1       |rec − x|                                    pixel fidelity (PSNR)
  grad     multi-scale L1 of image gradients            edges (``train.gradient_loss``, the VAE's own term)
  lpips    LPIPS-Alex v0.1 (``dragdiff.bench.lpips``)   perceptual fidelity
  outlier  L1 of rec's excursion outside x's 5×5 range  speckles, tints (``metrics.local_range_excess``)
AdamW with warm-up, then the lr falls linearly over the wall-clock budget; EMA of the weights is what ships.

Run directory: ``decoder_state.pt`` (decoder-side weights, EMA, optimizer, step, RNG; resumed if present),
``log.jsonl``, ``eval.json``. ``export_decoder`` writes a diffusers VAE folder whose encoder-side tensors are
copied byte for byte from the source file.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from dragdiff.config import ConfigError
from dragdiff.io import atomic_dir, atomic_write_json
from dragdiff.metrics import local_range_excess, speckle_share
from dragdiff.model.data import to_uint8
from dragdiff.model.train import (
    EVAL_SEED,
    ImageSource,
    JsonlLog,
    Pool,
    _autocast,
    atomic_save,
    gradient_loss,
    psnr,
    warmup_lr,
)

log = logging.getLogger(__name__)

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
ENCODER_SIDE = ("encoder.", "quant_conv.")  # frozen: they define the latent space
DECODER_SIDE = ("decoder.", "post_quant_conv.")  # trained
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "model"
TINT_THRESHOLD = 0.1  # a second, looser outlier share: also counts whole objects decoded in a shifted colour


@dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of the decoder fine-tune. Defaults: the H200 recipe of issue #17 (docs/model.md)."""

    seed: int = 0
    steps: int = 1_000_000  # upper bound; the wall-clock budget ends the run
    batch: int = 128
    lr: float = 2e-4
    lr_final: float = 1e-5  # reached linearly at the end of the wall-clock budget
    warmup: int = 200
    l1_weight: float = 1.0
    grad_weight: float = 0.5
    lpips_weight: float = 0.25  # SD's ft-MSE: MSE + 0.1 LPIPS, ft-EMA: L1 + 1 LPIPS; here towards PSNR
    outlier_weight: float = 1.0
    # share of each batch decoded from a posterior sample (what the UNet's latents look like) instead of the
    # mean (what an edit's inversion starts from, and what the PSNR target measures)
    sample_fraction: float = 0.25
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    emoji_fraction: float = 0.5  # the UNet's data mix (calls 3-5, session 5)
    pool: int = 32_768  # images (uint8) and their posterior moments kept on the device
    refresh: int = 16  # fresh images per step, drawn 32 steps' worth at once: few host syncs
    refresh_every: int = 32
    pool_seconds: float = 45.0
    log_every: int = 50
    checkpoint_minutes: float = 2.0

    def __post_init__(self) -> None:
        for name in ("batch", "pool", "warmup"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decoder.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_fraction", "emoji_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"decoder.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"decoder.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.lr_final < 0:
            raise ConfigError(f"decoder.lr must be > 0 and lr_final >= 0, got {self.lr}, {self.lr_final}")
        weights = ("l1_weight", "grad_weight", "lpips_weight", "outlier_weight")
        if any(getattr(self, w) < 0 for w in weights):
            raise ConfigError(f"decoder loss weights must be >= 0, got {[getattr(self, w) for w in weights]}")


# ------------------------------------------------------------------------------------------ weights


def vae_dir(model: Path) -> Path:
    """A pipeline folder's ``vae/`` or a VAE folder itself."""
    model = Path(model)
    folder = model / "vae" if (model / "model_index.json").exists() else model
    if not (folder / VAE_WEIGHTS).is_file():
        raise FileNotFoundError(f"no {VAE_WEIGHTS} in {folder} (need a pipeline or VAE folder)")
    return folder


def encoder_side_digest(weights: Path) -> str:
    """SHA-256 over the encoder-side tensors of a VAE safetensors file (name, dtype, shape, raw bytes).

    Equal digests mean bit-identical encoders, hence the same latent space.
    """
    h = hashlib.sha256()
    with safe_open(str(weights), "pt") as f:
        for name in sorted(k for k in f.keys() if k.startswith(ENCODER_SIDE)):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def decoder_params(vae: AutoencoderKL) -> dict[str, torch.nn.Parameter]:
    return {k: p for k, p in vae.named_parameters() if k.startswith(DECODER_SIDE)}


def export_decoder(source: Path, decoder: Mapping[str, Tensor], out_dir: Path) -> Path:
    """Write a VAE folder: ``source``'s config and encoder-side tensors (bytes unchanged) + ``decoder``.

    ``decoder`` holds every decoder-side tensor of the source file; each is cast to the source's dtype (fp16).
    """
    src = vae_dir(source)
    with safe_open(str(src / VAE_WEIGHTS), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    wanted = {k for k in tensors if k.startswith(DECODER_SIDE)}
    if set(decoder) != wanted:
        raise ValueError(f"decoder tensors differ from the source's: {sorted(set(decoder) ^ wanted)[:5]}")
    for k in wanted:
        tensors[k] = decoder[k].detach().to(device="cpu", dtype=tensors[k].dtype).contiguous()
    with atomic_dir(out_dir) as tmp:
        shutil.copy(src / "config.json", tmp / "config.json")
        save_file(tensors, str(tmp / VAE_WEIGHTS), metadata={"format": "pt"})
    return Path(out_dir)


def load_vae(model: Path, device: torch.device) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(vae_dir(model), dtype=torch.float32).to(device).eval()


# ------------------------------------------------------------------------------------------ training


def decoder_loss(
    vae: AutoencoderKL,
    z: Tensor,
    x: Tensor,
    cfg: DecoderConfig,
    lpips: Callable[[Tensor, Tensor], Tensor] | None,
) -> dict[str, Tensor]:
    """The weighted loss of decoding latents ``z`` (B, 4, h, w) into images ``x`` (B, 3, H, W) in [−1, 1]."""
    with _autocast(z.device):
        rec = vae.decode(z).sample
    rec = rec.float()  # (B, 3, H, W)
    parts = {
        "l1": (rec - x).abs().mean(),
        "grad": gradient_loss(rec, x),
        "outlier": local_range_excess(rec, x).mean(),
    }
    if lpips is not None and cfg.lpips_weight > 0:
        parts["lpips"] = lpips(rec, x).mean()
    weight = {"l1": cfg.l1_weight, "grad": cfg.grad_weight, "lpips": cfg.lpips_weight}
    weight["outlier"] = cfg.outlier_weight
    parts["loss"] = sum((weight[k] * v for k, v in parts.items()), start=rec.new_zeros(()))
    return parts


def draw_latents(moments: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """Posterior mean, or for a random ``fraction`` of the batch a posterior sample.

    (B, 8, h, w) moments -> (B, 4, h, w) latents.
    """
    dist = DiagonalGaussianDistribution(moments)
    use = torch.rand(moments.shape[0], generator=gen, device=moments.device) < fraction  # (B,)
    return torch.where(use[:, None, None, None], dist.sample(generator=gen), dist.mode())


@dataclass
class DecoderTrainer:
    """The VAE (encoder frozen), the decoder's EMA and optimizer: the state a checkpoint holds."""

    vae: AutoencoderKL
    ema: EMAModel
    opt: torch.optim.Optimizer
    step: int = 0

    @classmethod
    def build(cls, vae: AutoencoderKL, cfg: DecoderConfig) -> DecoderTrainer:
        vae.requires_grad_(False)
        params = list(decoder_params(vae).values())
        for p in params:
            p.requires_grad_(True)
        ema = EMAModel(params, decay=cfg.ema_decay, foreach=True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        return cls(vae, ema, opt)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(decoder_params(self.vae).values())

    def state_dict(self) -> dict[str, Any]:
        weights = {k: p.detach() for k, p in decoder_params(self.vae).items()}
        return {
            "decoder": weights,
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, p in decoder_params(self.vae).items():
                p.copy_(state["decoder"][k])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]

    @contextmanager
    def ema_weights(self) -> Iterator[dict[str, Tensor]]:
        """Temporarily swap the EMA weights into the decoder; yields them by name."""
        params = self.params
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield {k: p.detach().clone() for k, p in decoder_params(self.vae).items()}
        finally:
            self.ema.restore(params)


def _lpips(device: torch.device, required: bool) -> Callable[[Tensor, Tensor], Tensor] | None:
    try:
        from dragdiff.bench.lpips import LPIPS  # type: ignore[import-not-found]

        return LPIPS().to(device).eval()  # type: ignore[no-any-return]
    except (ImportError, FileNotFoundError, ValueError) as exc:
        if required:
            raise FileNotFoundError(f"the LPIPS loss needs its weights: {exc}") from exc
        log.warning("LPIPS unavailable (%s)", exc)
        return None


def _latent_pool(vae: AutoencoderKL, data: ImageSource, cfg: DecoderConfig, gen: torch.Generator) -> Pool:
    """Images (uint8) with the frozen encoder's posterior moments, drawn and encoded on the device."""
    device = vae.device
    data_gen = torch.Generator().manual_seed(cfg.seed + 300)  # on the host; never EVAL_SEED

    @torch.no_grad()
    def fill(n: int) -> tuple[Tensor, Tensor]:
        images, _ = data.sample(n, generator=data_gen, device=device)  # (n, 3, S, S) in [-1, 1]
        moments = vae.encode(images).latent_dist.parameters.float()  # (n, 8, h, w), fp32 encoder
        return to_uint8(images), moments

    return Pool(
        fill, cfg.pool, cfg.refresh, gen, max_seconds=cfg.pool_seconds, refresh_every=cfg.refresh_every
    )


def _lr_at(step: int, elapsed: float, budget: float, cfg: DecoderConfig) -> float:
    """Linear warm-up over steps, then linear decay to ``lr_final`` over the wall-clock budget."""
    done = min(1.0, elapsed / max(budget, 1e-9))
    return cfg.lr_final + (warmup_lr(step, cfg.lr, cfg.warmup) - cfg.lr_final) * (1.0 - done)


def train_decoder(
    model: Path,
    run_dir: Path,
    data: ImageSource,
    cfg: DecoderConfig,
    device: torch.device,
    max_minutes: float,
    export: Path | None = None,
    progress: bool = False,
) -> DecoderTrainer:
    """Fine-tune (or resume) the decoder of ``model``'s VAE for at most ``max_minutes``.

    Every ``checkpoint_minutes`` and at the end the state is saved and, with ``export``, the EMA decoder
    is written there as a VAE folder, so a run cut short still leaves weights.
    """
    t0 = time.monotonic()
    state_path = run_dir / "decoder_state.pt"
    tr = DecoderTrainer.build(load_vae(model, device).to(memory_format=torch.channels_last), cfg)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        tr.load_state_dict(state)
        gen.set_state(state["rng"].cpu())
        log.info("resumed the decoder at step %d", tr.step)
    lpips = _lpips(device, required=cfg.lpips_weight > 0)
    pool = _latent_pool(tr.vae, data, cfg, gen)
    jlog = JsonlLog(run_dir / "log.jsonl")
    jlog.write(phase="decoder_pool", size=pool.size, images_per_s=pool.fill_rate)

    def checkpoint() -> None:
        atomic_save({**tr.state_dict(), "rng": gen.get_state()}, state_path)
        if export is not None:
            with tr.ema_weights() as weights:
                export_decoder(model, weights, export)

    tr.vae.decoder.train()
    tick, seen, last_ckpt = time.monotonic(), 0, time.monotonic()
    budget = max_minutes * 60
    bar = tqdm(desc="decoder", unit="step", initial=tr.step, disable=not progress)
    while tr.step < cfg.steps and time.monotonic() - t0 < budget:
        u8, moments = pool.draw(cfg.batch)
        x = (u8.float() / 127.5 - 1).contiguous(memory_format=torch.channels_last)  # (B, 3, S, S)
        z = draw_latents(moments, cfg.sample_fraction, gen).contiguous(memory_format=torch.channels_last)
        for g in tr.opt.param_groups:
            g["lr"] = _lr_at(tr.step, time.monotonic() - t0, budget, cfg)
        parts = decoder_loss(tr.vae, z, x, cfg, lpips)
        tr.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(tr.params, cfg.grad_clip)
        tr.opt.step()
        tr.ema.step(tr.params)
        tr.step += 1
        seen += cfg.batch
        bar.update()
        if tr.step % cfg.log_every == 0:
            now = time.monotonic()
            values = {k: v.item() for k, v in parts.items()}
            rate = seen / max(now - tick, 1e-9)
            lr = tr.opt.param_groups[0]["lr"]
            jlog.write(
                phase="decoder", step=tr.step, **values, lr=lr, samples_per_s=rate, minutes=(now - t0) / 60
            )
            log.info("decoder step %d loss %.4f (%.0f samples/s)", tr.step, values["loss"], rate)
            bar.set_postfix(loss=f"{values['loss']:.4f}", samples_per_s=f"{rate:.0f}")
            tick, seen = now, 0
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    checkpoint()
    tr.vae.eval()
    return tr


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def compare_decoders(
    vaes: Mapping[str, AutoencoderKL],
    sets: Mapping[str, ImageSource],
    device: torch.device,
    n: int = 256,
    chunk: int = 64,
    lpips: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Round-trip metrics of each VAE on the same ``n`` held-out images (``EVAL_SEED``) of each set.

    Returns ``{set: {vae: metrics}}``; metrics (means over images): ``psnr_db`` (posterior mean decoded, as
    edits do), ``psnr_sample_db`` (a posterior sample, as the UNet's latents are), ``speckle_share`` (pixels
    more than ``SPECKLE_THRESHOLD`` outside the source's local 5×5 range), ``tint_share`` (the same at
    ``TINT_THRESHOLD``), and ``lpips_<net>`` for each given LPIPS.
    """
    lpips = lpips or {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, data in sets.items():
        gen = torch.Generator().manual_seed(EVAL_SEED)
        rows: dict[str, dict[str, list[Tensor]]] = {name: {} for name in vaes}
        for i in range(0, n, chunk):
            x, _ = data.sample(min(chunk, n - i), generator=gen, device=device)  # (b, 3, S, S) in [-1, 1]
            for name, vae in vaes.items():
                for key, value in _round_trip_metrics(vae, x, lpips, seed=i).items():
                    rows[name].setdefault(key, []).append(value)
        out[set_name] = {
            name: {k: torch.cat(v).mean().item() for k, v in m.items()} | {"n_images": float(n)}
            for name, m in rows.items()
        }
    return out


def _round_trip_metrics(
    vae: AutoencoderKL, x: Tensor, lpips: Mapping[str, Callable[[Tensor, Tensor], Tensor]], seed: int
) -> dict[str, Tensor]:
    """Per-image metrics (each (b,)) of encoding ``x`` and decoding the posterior mean and a sample."""
    dist = vae.encode(x.to(vae.dtype)).latent_dist
    rec = vae.decode(dist.mode()).sample.float().clamp(-1, 1)  # (b, 3, S, S)
    gen = torch.Generator(x.device).manual_seed(EVAL_SEED + seed)
    rec_sample = vae.decode(dist.sample(generator=gen)).sample.float().clamp(-1, 1)
    src, img = (x + 1) / 2, (rec + 1) / 2  # [0, 1]
    metrics = {
        "psnr_db": psnr(rec, x),
        "psnr_sample_db": psnr(rec_sample, x),
        "speckle_share": speckle_share(img, src),
        "tint_share": speckle_share(img, src, threshold=TINT_THRESHOLD),
    }
    for net, fn in lpips.items():
        metrics[f"lpips_{net}"] = fn(rec, x).flatten().cpu()
    return {k: v.cpu() for k, v in metrics.items()}


def eval_sources(emoji_pack: Path | None, size: int = 128) -> dict[str, ImageSource]:
    """The two held-out sets of the model card: procedural scenes, and emoji composites (with a pack)."""
    from dragdiff.model.data import TrainingData

    sets: dict[str, ImageSource] = {"procedural": TrainingData(size, emoji_fraction=0.0)}
    if emoji_pack is not None:
        sets["emoji"] = TrainingData(size, emoji_pack=emoji_pack, emoji_fraction=1.0)
    return sets


def format_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A Markdown table: one row per (set, VAE)."""
    keys = ["psnr_db", "psnr_sample_db", "lpips_alex", "lpips_vgg", "speckle_share", "tint_share"]
    present = [k for k in keys if any(k in m for per in results.values() for m in per.values())]
    lines = ["| set | VAE | " + " | ".join(present) + " |", "|---|---|" + "---|" * len(present)]
    for set_name, per in results.items():
        for name, m in per.items():
            cells = [_cell(k, m.get(k)) for k in present]
            lines.append(f"| {set_name} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    if key.endswith("_share"):
        return f"{value * 100:.4f} %"
    return f"{value:.2f}" if key.endswith("_db") else f"{value:.4f}"


# ------------------------------------------------------------------------------------------ CLI


def register_train_decoder(sub: Any) -> None:
    p = sub.add_parser("train-vae-decoder", help="fine-tune the VAE decoder (encoder frozen)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="pipeline or VAE folder to start from")
    p.add_argument("--run-dir", type=Path, default=Path("runs/vae-decoder"), help="state and logs (resumed)")
    p.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of this chunk")
    p.add_argument("--export", type=Path, default=None, help="write the EMA decoder's VAE folder here")
    p.add_argument("--emoji-pack", type=Path, default=None, help="emoji .npz (`dragdiff make-data`)")
    p.add_argument(
        "--eval-images", type=int, default=256, help="held-out images per set after training (0: none)"
    )
    p.add_argument("--device", default=None)
    for f in fields(DecoderConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=None, help=f"default {f.default}")
    p.set_defaults(func=run_decoder_training)


def run_decoder_training(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    overrides = {
        f.name: getattr(args, f.name) for f in fields(DecoderConfig) if getattr(args, f.name) is not None
    }
    cfg = replace(DecoderConfig(), **overrides)
    if cfg.emoji_fraction > 0 and args.emoji_pack is None:
        raise ConfigError("--emoji-pack is needed for emoji_fraction > 0 (or pass --emoji-fraction 0)")
    from dragdiff.model.data import TrainingData

    args.run_dir.mkdir(parents=True, exist_ok=True)
    size = AutoencoderKL.load_config(vae_dir(args.model))["sample_size"]
    data = TrainingData(size, emoji_pack=args.emoji_pack, emoji_fraction=cfg.emoji_fraction)
    bar = sys.stderr.isatty()  # no bar in logs
    tr = train_decoder(args.model, args.run_dir, data, cfg, device, args.minutes, args.export, progress=bar)
    if args.eval_images > 0:
        before = load_vae(args.model, device)
        with tr.ema_weights():
            lpips = _lpips(device, required=False)
            nets = {"alex": lpips} if lpips is not None else {}
            results = compare_decoders(
                {"before": before, "after": tr.vae},
                eval_sources(args.emoji_pack, size),
                device,
                n=args.eval_images,
                lpips=nets,
            )
        atomic_write_json(args.run_dir / "eval.json", {"steps": tr.step, "results": results})
        print(format_table(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dragdiff.model.decoder ...``: ``dragdiff train-vae-decoder`` without the CLI dispatcher."""
    parser = argparse.ArgumentParser(prog="dragdiff-train-vae-decoder")
    register_train_decoder(parser.add_subparsers(dest="command"))
    argv = list(argv if argv is not None else sys.argv[1:])
    if not argv or argv[0] != "train-vae-decoder":
        argv = ["train-vae-decoder", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
