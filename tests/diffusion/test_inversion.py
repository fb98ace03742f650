"""DDIM inversion (SPEC §3): timesteps, prompt embeddings, and invert-then-denoise reconstruction."""

from __future__ import annotations

import torch

from dragdiff.diffusion.inversion import (
    denoise_timesteps,
    encode_image,
    encode_prompt,
    image_to_tensor,
    invert,
)
from dragdiff.diffusion.unet import Conditioning, unet_eps


def test_sd15_timesteps(tiny_pipeline) -> None:
    sched = tiny_pipeline.scheduler  # SD-1.5 betas and DDIM settings
    steps = denoise_timesteps(sched, 50, 35)
    assert steps == list(range(681, 0, -20))  # 681, 661, ..., 1; inversion visits them backwards


def test_prompt_embeddings_use_the_tokenizer_length(tiny_pipeline) -> None:
    emb = encode_prompt(tiny_pipeline, "a red cat")
    assert emb.shape == (1, tiny_pipeline.tokenizer.model_max_length, 32)  # 16 here, not 77


def test_invert_then_denoise_reconstructs(tiny_pipeline, tiny_image) -> None:
    """DDIM inversion is reversible to the extent ε varies slowly along the path (as a trained model's does).

    The random tiny UNet's ε head is damped and z_0 brought to unit variance (what SD's scaling factor aims
    for), so the test measures the inversion's bookkeeping (timesteps, alphas, which latent ε sees).
    """
    pipe = tiny_pipeline
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(0.1)
        pipe.unet.conv_out.bias.mul_(0.1)
    z0 = encode_image(pipe, image_to_tensor(tiny_image.resize((64, 32))))  # (1, 4, 8, 16)
    z0 = z0 / z0.std()
    cond = Conditioning(encode_prompt(pipe, "a photo"))

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            return unet_eps(pipe.unet, z, t, cond)

    inv, visited = invert(pipe.scheduler, z0, eps, num_steps=10, inverted_steps=7)
    assert inv.timestep == 601 and len(visited) == 8
    z = inv.latents
    for t in inv.denoise_timesteps:
        z = pipe.scheduler.step(eps(z, t), t, z).prev_sample
    err = (z - z0).norm() / z0.norm()
    moved = (inv.latents - z0).norm() / z0.norm()
    assert moved > 0.5  # z_t is far from z_0 ...
    assert err < 0.05 * moved  # ... and denoising brings it back
