"""Reference-latent control: layer selection by name, install/restore, what the edited branch attends to."""

from __future__ import annotations

import pytest
import torch

from dragdiff.diffusion.attention import ReferenceAttnProcessor, controlled_layers, reference_control


def _run(unet, z: torch.Tensor) -> torch.Tensor:
    emb = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1)).expand(z.shape[0], -1, -1)
    with torch.no_grad():
        return unet(z, 500, emb).sample


def _latents(seed: int) -> torch.Tensor:
    return torch.randn(1, 4, 16, 8, generator=torch.Generator().manual_seed(seed))


def test_selects_self_attention_of_the_highest_resolution_levels(tiny_pipeline) -> None:
    names = controlled_layers(tiny_pipeline.unet, 2)
    assert names and all(".attn1." in n for n in names)
    assert {n.split(".")[1] for n in names} == {"2", "3"}  # up_blocks.2 and up_blocks.3, like SD-1.5
    assert {n.split(".")[1] for n in controlled_layers(tiny_pipeline.unet, 3)} == {"1", "2", "3"}
    with pytest.raises(ValueError, match="control_levels"):
        controlled_layers(tiny_pipeline.unet, 4)  # only 3 decoder levels have attention


def test_installed_then_restored(tiny_pipeline) -> None:
    unet = tiny_pipeline.unet
    before = dict(unet.attn_processors)
    with reference_control(unet, 2):
        inside = unet.attn_processors
        controlled = set(controlled_layers(unet, 2))
        for name, proc in inside.items():
            assert isinstance(proc, ReferenceAttnProcessor) == (name in controlled)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_restored_after_an_error(tiny_pipeline) -> None:
    unet = tiny_pipeline.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError), reference_control(unet, 2):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_identical_branches_give_identical_outputs(tiny_pipeline) -> None:
    z = _latents(0)
    plain = _run(tiny_pipeline.unet, z)
    with reference_control(tiny_pipeline.unet, 2):
        both = _run(tiny_pipeline.unet, torch.cat([z, z, z, z]))  # also the 4-way guidance layout
    for row in both:
        torch.testing.assert_close(row, plain[0], rtol=1e-4, atol=1e-5)


def test_source_is_plain_and_edit_reads_the_source(tiny_pipeline) -> None:
    src, edit = _latents(0), _latents(1)
    unet = tiny_pipeline.unet
    plain_src, plain_edit = _run(unet, src), _run(unet, edit)
    with reference_control(unet, 2) as switch:
        controlled = _run(unet, torch.cat([src, edit]))
        switch.enabled = False
        switched_off = _run(unet, torch.cat([src, edit]))
    torch.testing.assert_close(controlled[0], plain_src[0], rtol=1e-4, atol=1e-5)  # source: plain self-attn
    assert (controlled[1] - plain_edit[0]).abs().max() > 1e-3  # edit: changed by the source's keys/values
    torch.testing.assert_close(switched_off[1], plain_edit[0], rtol=1e-4, atol=1e-5)
