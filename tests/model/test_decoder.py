"""VAE decoder fine-tune (issue #17): the speckle measure, a frozen encoder, export, resume, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dragdiff.cli import main as cli_main
from dragdiff.metrics import local_range_excess, speckle_share
from dragdiff.model.arch import TINY_SPEC, build_vae
from dragdiff.model.decoder import (
    DECODER_SIDE,
    VAE_WEIGHTS,
    DecoderConfig,
    encoder_side_digest,
    export_decoder,
    train_decoder,
)

ASSET_VAE = Path(__file__).resolve().parents[2] / "src" / "dragdiff" / "assets" / "model" / "vae"
# encoder_side_digest of the VAE shipped before issue #17 (commit f1ed3a8): the encoder and quant_conv of
# every later VAE must stay bit-identical to it, or the UNet's latent space would move under it
SHIPPED_ENCODER_DIGEST = "f4228ba8ef2b55c4417c89e4856eee8794bdf2e129fc9e32723a8f19cc42f9cf"


@pytest.mark.skipif(not (ASSET_VAE / VAE_WEIGHTS).exists(), reason="shipped model not present")
def test_shipped_vae_keeps_the_encoder_the_unet_was_trained_on() -> None:
    assert encoder_side_digest(ASSET_VAE / VAE_WEIGHTS) == SHIPPED_ENCODER_DIGEST


def test_speckle_share_counts_new_colours_not_blur() -> None:
    src = torch.zeros(1, 3, 16, 16)
    src[..., 8:] = 1.0  # a black | white edge
    blurred = src.clone()
    blurred[..., 7:9] = 0.5  # a soft edge mixes the two colours: inside the local range
    assert local_range_excess(blurred, src).abs().max().item() == 0.0
    assert speckle_share(blurred, src).item() == 0.0
    speck = blurred.clone()
    speck[0, 0, 2, 2] = 0.3  # a reddish dot on black, far from the edge: outside the range by 0.3
    speck[0, 1, 12, 12] = 0.9  # 0.1 below white, within the 0.2 threshold
    share = speckle_share(speck, src)
    assert share.shape == (1,) and share.item() == pytest.approx(1 / 256)
    assert speckle_share(speck, src, threshold=0.05).item() == pytest.approx(2 / 256)
    with pytest.raises(ValueError, match="one shape"):
        local_range_excess(speck, src[..., :8])


class FlatShapes:
    """A square of one colour on another: enough for a few decoder steps."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        s = self.size
        colours = torch.rand(n, 2, 3, 1, 1, generator=generator)
        images = colours[:, 0].expand(n, 3, s, s).clone()
        images[..., s // 4 : s // 2, s // 4 : s // 2] = colours[:, 1]
        return (images * 2 - 1).to(device), ["a square"] * n


def _tiny_model(folder: Path) -> Path:
    torch.manual_seed(0)
    build_vae(TINY_SPEC).to(torch.float16).save_pretrained(folder)
    return folder


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_training_changes_only_the_decoder_and_resumes(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "vae")
    cfg = DecoderConfig(steps=3, batch=2, pool=8, refresh=2, refresh_every=1, log_every=1, lpips_weight=0.0)
    run, export = tmp_path / "run", tmp_path / "export"
    data, cpu = FlatShapes(TINY_SPEC.image_size), torch.device("cpu")
    train_decoder(model, run, data, cfg, cpu, max_minutes=5, export=export)
    before, after = _tensors(model / VAE_WEIGHTS), _tensors(export / VAE_WEIGHTS)
    assert before.keys() == after.keys() and all(t.dtype == torch.float16 for t in after.values())
    assert encoder_side_digest(export / VAE_WEIGHTS) == encoder_side_digest(model / VAE_WEIGHTS)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(DECODER_SIDE) for k in changed)  # the EMA decoder moved, nothing else
    tr = train_decoder(model, run, data, replace(cfg, steps=5), cpu, max_minutes=5)
    assert tr.step == 5  # resumed at step 3
    steps = [json.loads(line).get("step") for line in (run / "log.jsonl").read_text().splitlines()]
    assert [s for s in steps if s is not None] == [1, 2, 3, 4, 5]


def test_export_needs_every_decoder_tensor(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "vae")
    decoder = {k: v for k, v in _tensors(model / VAE_WEIGHTS).items() if k.startswith(DECODER_SIDE)}
    decoder.pop(next(iter(decoder)))
    with pytest.raises(ValueError, match="decoder tensors differ"):
        export_decoder(model, decoder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_trains_exports_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _tiny_model(tmp_path / "vae")
    args = ["train-vae-decoder", "--model", str(model), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    args += ["--export", str(tmp_path / "export"), "--steps", "2", "--batch", "2", "--pool", "4"]
    args += ["--lpips-weight", "0", "--eval-images", "2", "--log-every", "1"]
    assert cli_main([*args, "--emoji-fraction", "0"]) == 0
    table = capsys.readouterr().out
    assert "| procedural | before |" in table and "| procedural | after |" in table
    results = json.loads((tmp_path / "run" / "eval.json").read_text())["results"]
    assert set(results["procedural"]["after"]) >= {"psnr_db", "psnr_sample_db", "speckle_share", "tint_share"}
    assert (tmp_path / "export" / VAE_WEIGHTS).is_file()
    assert cli_main(args) == 2  # emoji composites (the default half) need a pack: a one-line error
