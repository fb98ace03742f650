"""Training recipe: latent rescaling, data pool, metrics, the shipped model, a CPU smoke run of the CLI."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors import safe_open

from dragdiff.metrics import PSNR_CAP
from dragdiff.model.arch import SD_SCALING_FACTOR, TINY_SPEC, build_vae
from dragdiff.model.train import (
    Pool,
    TrainConfig,
    atomic_save,
    build_scheduler,
    gradient_loss,
    latent_std,
    main,
    min_snr_weight,
    psnr,
    rescale_latents,
    save_image,
)

ASSET = Path(__file__).resolve().parents[2] / "src" / "dragdiff" / "assets" / "model"


class StandInData:
    """Coloured rectangles on a flat background, with captions: enough structure for the recipe's checks."""

    def __init__(self, size: int = 32) -> None:
        self.size = size

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        s = self.size
        bg = torch.rand(n, 3, 1, 1, generator=generator)
        fg = torch.rand(n, 3, 1, 1, generator=generator)
        lo = torch.randint(0, s // 2, (n, 2), generator=generator)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        inside = (yy >= lo[:, :1, None]) & (yy < lo[:, :1, None] + s // 3)
        inside &= (xx >= lo[:, 1:, None]) & (xx < lo[:, 1:, None] + s // 3)  # (n, S, S)
        images = torch.where(inside[:, None], fg, bg) * 2 - 1  # (n, 3, S, S)
        return images.to(device), ["a square on a background"] * n


def test_rescale_makes_the_sd_factor_right_and_keeps_reconstructions() -> None:
    torch.manual_seed(0)
    vae = build_vae(TINY_SPEC).eval()
    data = StandInData(TINY_SPEC.image_size)
    x, _ = data.sample(4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = vae.decode(vae.encode(x).latent_dist.mode()).sample
    k = rescale_latents(vae, data, torch.Generator().manual_seed(2), torch.device("cpu"), n=512)
    assert k != pytest.approx(1.0, abs=0.05)  # a random VAE's latents are far from std 1/0.18215
    with torch.no_grad():
        after = vae.decode(vae.encode(x).latent_dist.mode()).sample
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    std = latent_std(vae, data, torch.Generator().manual_seed(3), torch.device("cpu"), n=512)
    assert std * SD_SCALING_FACTOR == pytest.approx(1.0, abs=0.05)  # fresh data: unit variance after scaling


def test_pool_draws_batches_and_renews_itself() -> None:
    counter = {"next": 0}

    def fill(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = torch.arange(counter["next"], counter["next"] + n)
        counter["next"] += n
        return values[:, None].float(), values[:, None]

    pool = Pool(
        fill, size=64, refresh=4, generator=torch.Generator().manual_seed(0), chunk=16, refresh_every=2
    )
    assert pool.size == 64 and set(pool.data.flatten().tolist()) == set(range(64))
    x, ids = pool.draw(8)
    assert x.shape == (8, 1) and torch.equal(x.long(), ids)  # examples keep their captions
    pool.draw(8)  # second draw: 4 * 2 entries replaced at once
    assert pool.data.max().item() >= 64
    quick = Pool(fill, size=1000, refresh=0, generator=torch.Generator(), chunk=10, max_seconds=0.0)
    assert quick.size == 10  # a fill budget of 0 s still gives one chunk


def test_training_does_not_import_the_bench_area() -> None:
    code = (
        "import sys, dragdiff.model.train; "
        "bad = [m for m in sys.modules if m.startswith('dragdiff.bench')]; "
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metrics_behave() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    noisy = x + 0.1 * torch.randn_like(x)
    expected = 10 * torch.log10(4 / ((noisy - x) ** 2).flatten(1).mean(1))
    torch.testing.assert_close(psnr(noisy, x), expected)  # [-1, 1] images: peak-to-peak 2
    assert (psnr(x, x) == PSNR_CAP).all()  # the benchmark's cap: identical images stay finite
    assert gradient_loss(x, x).item() == 0.0
    assert gradient_loss(torch.roll(x, 1, dims=-1), x).item() > 0.1


@pytest.mark.skipif(not (ASSET / "model_index.json").exists(), reason="shipped model not present")
def test_shipped_model_fits_budget_and_loads() -> None:
    weights = sorted(ASSET.rglob("*.safetensors"))
    assert weights and all(p.stat().st_size <= 15e6 for p in weights)  # every file under 15 MB
    assert sum(p.stat().st_size for p in weights) <= 30e6
    for path in weights:  # shipped in half precision
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path.name
    pipe = StableDiffusionPipeline.from_pretrained(ASSET)
    assert pipe.vae.config.scaling_factor == SD_SCALING_FACTOR
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128
    sched = pipe.scheduler.config
    assert (sched.beta_schedule, sched.steps_offset, sched.clip_sample) == ("scaled_linear", 1, False)
    assert pipe.tokenizer("a photo of a cat")["input_ids"][1:-1] == [320, 1125, 539, 320, 2368]  # CLIP ids
    assert pipe.safety_checker is None


def _fake_bpe(folder: Path) -> None:
    folder.mkdir()
    merges = ["a b", "r e", "i n", "o n</w>", "t h", "th e</w>", "a n", "an d</w>"]
    text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress(text.encode()))


def test_run_files_are_readable_like_plain_files_and_failures_leave_no_temporaries(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    plain = 0o666 & ~umask
    atomic_save({"step": 1}, tmp_path / "state.pt")
    save_image(Image.new("RGB", (4, 4)), tmp_path / "samples" / "grid.png")
    for path in (tmp_path / "state.pt", tmp_path / "samples" / "grid.png"):
        assert path.stat().st_mode & 0o777 == plain, path
    assert torch.load(tmp_path / "state.pt") == {"step": 1}
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):  # a lambda cannot be pickled
        atomic_save({"fn": lambda: 0}, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="cannot save an image"):  # no format for this suffix
        save_image(Image.new("RGB", (4, 4)), tmp_path / "samples" / "grid.unknown")
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert leftovers == ["grid.png", "state.pt"]


def test_cli_smoke_run_resumes_exports_and_generates(tmp_path: Path) -> None:
    _fake_bpe(tmp_path / "bpe")
    run, export = tmp_path / "run", tmp_path / "export"
    common = [
        "--tiny",
        "--run-dir",
        str(run),
        "--bpe-cache",
        str(tmp_path / "bpe"),
        "--merges",
        "8",
        "--device",
        "cpu",
        "--vae-pool",
        "8",
        "--unet-pool",
        "8",
        "--refresh",
        "2",
        "--refresh-every",
        "1",
        "--log-every",
        "1",
        "--sample-every",
        "0",
        "--vae-batch",
        "4",
        "--unet-batch",
        "4",
    ]
    assert main([*common, "--vae-steps", "2", "--unet-steps", "2"]) == 0
    resume = ["--phase", "unet", "--unet-steps", "3", "--min-snr-gamma", "5", "--unet-lr", "1e-3"]
    resume += ["--unet-lr-final", "1e-5"]
    assert main([*common, *resume, "--export", str(export)]) == 0  # resume, with the session-5 recipe options
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    unet_steps = [r["step"] for r in records if r["phase"] == "unet"]
    assert unet_steps == [1, 2, 3]  # the second call continued at step 3
    lrs = [r["lr"] for r in records if r["phase"] == "unet"]
    assert 1e-5 <= lrs[-1] <= 1e-3  # the annealed chunk's lr lies between its end points
    assert any(r["phase"] == "vae_rescale" for r in records)
    pipe = StableDiffusionPipeline.from_pretrained(export, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red square", num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (TINY_SPEC.image_size, TINY_SPEC.image_size)


def test_init_from_needs_an_exported_folder(tmp_path: Path) -> None:
    _fake_bpe(tmp_path / "bpe")
    args = [
        "--tiny",
        "--run-dir",
        str(tmp_path / "run"),
        "--bpe-cache",
        str(tmp_path / "bpe"),
        "--device",
        "cpu",
    ]
    with pytest.raises(ValueError, match="exported pipeline folder"):
        main([*args, "--init-from", str(tmp_path / "nowhere"), "--phase", "none"])


def test_min_snr_weighting_keeps_noisy_steps_and_damps_easy_ones() -> None:
    alphas = build_scheduler().alphas_cumprod
    w = min_snr_weight(alphas, gamma=5.0)
    snr = alphas / (1 - alphas)
    assert torch.all(w[snr <= 5] == 1)  # noisy timesteps keep their full ε-MSE
    assert torch.allclose(w[snr > 5], 5 / snr[snr > 5])  # easy ones are damped to γ/SNR
    assert w[0] < 0.01 and w[-1] == 1


def test_bad_recipe_values_name_the_field() -> None:
    with pytest.raises(ValueError, match="min_snr_gamma.*-1"):
        TrainConfig(min_snr_gamma=-1)
    with pytest.raises(ValueError, match="ema_decay.*1.5"):
        TrainConfig(ema_decay=1.5)
