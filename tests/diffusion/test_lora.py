"""Identity LoRA (SPEC §2): training, the base UNet left clean, caching, diffusers-format save/reload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dragdiff.config import LoraConfig
from dragdiff.diffusion.lora import (
    WEIGHT_NAME,
    LoraCache,
    adapter_fits,
    hooked_lora,
    lora_adapter,
    lora_cache_key,
    train_lora,
)

CFG = LoraConfig(steps=2, batch_size=2, rank=4)


def _eps(pipe, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z, emb = torch.randn(1, 4, 8, 16, generator=g), torch.randn(1, 16, 32, generator=g)
    with torch.no_grad():
        return pipe.unet(z, 400, emb).sample


def _train(pipe, image, prompt: str = "a cat", cfg: LoraConfig = CFG):
    steps = train_lora(pipe, image.resize((64, 32)), prompt, cfg, side=64)
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as done:
            return done.value, events


def test_training_yields_progress_and_leaves_the_base_clean(tiny_pipeline, tiny_image) -> None:
    base_keys = set(tiny_pipeline.unet.state_dict())
    base_eps = _eps(tiny_pipeline)
    state, events = _train(tiny_pipeline, tiny_image)
    assert [e.step for e in events] == [1, 2] and all(e.phase == "lora" and e.loss > 0 for e in events)
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state}
    assert {"to_q", "to_k", "to_v", "0"} <= targets  # to_out.0 ends in "0"
    assert all(v.dtype == torch.float32 for v in state.values())
    assert any(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)  # B moved off its zero init
    assert set(tiny_pipeline.unet.state_dict()) == base_keys  # adapter removed again
    torch.testing.assert_close(_eps(tiny_pipeline), base_eps)


def test_untrained_adapter_is_the_identity_and_trained_one_is_not(tiny_pipeline, tiny_image) -> None:
    base = _eps(tiny_pipeline)
    with lora_adapter(tiny_pipeline.unet, CFG):  # B = 0 at init
        torch.testing.assert_close(_eps(tiny_pipeline), base)
    state, _ = _train(tiny_pipeline, tiny_image)
    with lora_adapter(tiny_pipeline.unet, CFG, state):
        assert (_eps(tiny_pipeline) - base).abs().max() > 0


def test_training_is_deterministic(tiny_pipeline, tiny_image) -> None:
    a, _ = _train(tiny_pipeline, tiny_image)
    b, _ = _train(tiny_pipeline, tiny_image)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cache_key_changes_with_each_input(tiny_image) -> None:
    img = tiny_image.resize((64, 32))
    key = lora_cache_key(img, "a cat", "model-a", CFG)
    assert key == lora_cache_key(img.copy(), "a cat", "model-a", CFG)
    other_image = img.copy()
    other_image.putpixel((0, 0), (0, 0, 0))
    assert key != lora_cache_key(other_image, "a cat", "model-a", CFG)
    assert key != lora_cache_key(img, "a dog", "model-a", CFG)
    assert key != lora_cache_key(img, "a cat", "model-b", CFG)
    assert key != lora_cache_key(img, "a cat", "model-a", dataclasses.replace(CFG, steps=3))
    assert key != lora_cache_key(img, "a cat", "model-a", CFG, seed=1)  # EditConfig.seed
    assert key != lora_cache_key(img, "a cat", "model-a", CFG, precision="torch.bfloat16")


def test_installed_adapter_is_frozen(tiny_pipeline, tiny_image) -> None:
    state, _ = _train(tiny_pipeline, tiny_image)
    for weights in (None, state):
        with lora_adapter(tiny_pipeline.unet, CFG, weights) as params:
            assert params and not any(p.requires_grad for p in params)


def test_adapter_that_does_not_fit_is_a_value_error(tiny_pipeline, tiny_image) -> None:
    state, _ = _train(tiny_pipeline, tiny_image)
    assert adapter_fits(tiny_pipeline.unet, CFG, state)
    other_rank = dataclasses.replace(CFG, rank=2)  # shapes differ
    partial = dict(list(state.items())[:-1])  # a missing key
    for cfg, weights in ((other_rank, state), (CFG, partial), (CFG, {"x.lora_A.weight": torch.zeros(1)})):
        with pytest.raises(ValueError, match="do not fit"), lora_adapter(tiny_pipeline.unet, cfg, weights):
            pass
        assert not adapter_fits(tiny_pipeline.unet, cfg, weights)
    assert not any("lora" in k for k in tiny_pipeline.unet.state_dict())  # removed again after each failure


def test_saved_adapter_reloads_from_disk_and_with_diffusers(
    tiny_pipeline, tiny_image, tmp_path: Path
) -> None:
    state, _ = _train(tiny_pipeline, tiny_image)
    with lora_adapter(tiny_pipeline.unet, CFG, state):
        ours = _eps(tiny_pipeline)
    LoraCache(tmp_path).put("k1", state, CFG)
    assert (tmp_path / "k1" / WEIGHT_NAME).is_file()
    fresh = LoraCache(tmp_path).get("k1")  # a new process: from disk
    assert fresh is not None and fresh.keys() == state.keys()
    assert all(torch.equal(fresh[k], state[k]) for k in state)
    assert LoraCache(tmp_path).get("missing") is None
    tiny_pipeline.load_lora_weights(tmp_path / "k1")  # the standard diffusers loader reads it too
    torch.testing.assert_close(_eps(tiny_pipeline), ours, rtol=1e-4, atol=1e-5)


def _run(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return done.value, [e.loss for e in events]


@pytest.mark.parametrize("size", [(64, 64), (64, 32)], ids=["square (one crop)", "wide (many crops)"])
def test_hooked_adapter_trains_what_peft_trains(tiny_pipeline, tiny_image, size) -> None:
    """The fast path's trainer (hooked adapter, every step's batch prepared up front) computes the eager
    peft trainer's weights: the same init, draws and maths (fp32 on CPU), within rounding."""
    image, cfg = tiny_image.resize(size), LoraConfig(steps=3, batch_size=2, rank=4)
    runs = [
        _run(train_lora(tiny_pipeline, image, "a cat", cfg, side=64, seed=5, share_encoding=True, hooked=h))
        for h in (False, True)
    ]
    (peft_state, peft_losses), (hooked_state, hooked_losses) = runs
    assert set(hooked_state) == set(peft_state)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in hooked_state.values())
    torch.testing.assert_close(torch.tensor(hooked_losses), torch.tensor(peft_losses), rtol=1e-5, atol=1e-7)
    for key, value in peft_state.items():
        torch.testing.assert_close(hooked_state[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_hooked_adapter_leaves_the_base_clean(tiny_pipeline, tiny_image) -> None:
    base = _eps(tiny_pipeline)
    unet = tiny_pipeline.unet
    with hooked_lora(unet, CFG) as params:
        torch.testing.assert_close(_eps(tiny_pipeline), base)  # B = 0 at init
        assert all(p.dtype == torch.float32 for p in params.values())
    assert not any(m._forward_hooks for m in unet.modules())
    torch.testing.assert_close(_eps(tiny_pipeline), base)
