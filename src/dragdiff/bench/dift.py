"""DIFT features (Tang et al., NeurIPS 2023) and DragBench's Mean Distance (MD; DragDiffusion paper §4.2).

Protocol (SPEC §7): the image is VAE-encoded (posterior sample × scaling factor), noised to t = 261, and
the UNet runs on an ensemble of 8 independently noised copies conditioned on the sample's prompt; the feature
map is the output of ``unet.up_blocks[1]``, averaged over the ensemble. For MD the features are bilinearly
upsampled to the full image size; for every pair the point of the edited image whose feature is most
cosine-similar to the source feature at the handle is found (global argmax), and MD is the mean Euclidean
distance, in pixels, between that point and the target.

The paper uses SD-2.1 (a user-provided checkpoint here: ``--dift-model PATH``); any SD pipeline works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from dragdiff.diffusion.inversion import image_to_tensor
from dragdiff.types import DragInstruction

DIFT_T = 261  # DIFT's timestep for SD-2.1 semantic correspondence
DIFT_UP_BLOCK = 1  # features = output of unet.up_blocks[1]
DIFT_ENSEMBLE = 8  # independently noised copies, features averaged
_CHANNEL_CHUNK = 128  # channels upsampled at a time when scoring a full-resolution map


class _Captured(Exception):
    """Raised by the hook once the wanted block has run: the rest of the UNet is not needed."""


@contextmanager
def _stop_after(block: torch.nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        store.append(output[0] if isinstance(output, tuple) else output)
        raise _Captured

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class DiftFeaturizer:
    """DIFT features from a diffusers SD pipeline (uses its vae, unet, tokenizer, text_encoder, scheduler)."""

    def __init__(
        self,
        pipeline: Any,
        t: int = DIFT_T,
        up_block: int = DIFT_UP_BLOCK,
        ensemble: int = DIFT_ENSEMBLE,
        seed: int = 0,
    ) -> None:
        if not 0 <= up_block < len(pipeline.unet.up_blocks):
            raise ValueError(
                f"up_block must index one of the UNet's {len(pipeline.unet.up_blocks)} up blocks, "
                f"got {up_block}"
            )
        if ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {ensemble}")
        self.pipe, self.t, self.up_block, self.ensemble, self.seed = pipeline, t, up_block, ensemble, seed

    @torch.no_grad()
    def _embed(self, prompt: str) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok(
            prompt,
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.pipe.text_encoder(ids.to(self.pipe.text_encoder.device))[0]  # (1, L, D)

    @torch.no_grad()
    def features(self, image: Image.Image, prompt: str = "") -> torch.Tensor:
        """(C, h, w) float32 DIFT feature map of ``image`` at the block's own resolution."""
        vae, unet = self.pipe.vae, self.pipe.unet
        dev, dtype = unet.device, unet.dtype
        gen = torch.Generator(device=dev).manual_seed(self.seed)  # same noise for every image: reproducible
        x = image_to_tensor(image).to(dev, vae.dtype)  # (1, 3, H, W) in [-1, 1]
        x = x.expand(self.ensemble, -1, -1, -1)  # (E, 3, H, W)
        latents = vae.encode(x).latent_dist.sample(generator=gen) * vae.config.scaling_factor  # (E, 4, h, w)
        t = torch.full((self.ensemble,), self.t, device=dev, dtype=torch.long)
        noise = torch.randn(latents.shape, generator=gen, device=dev, dtype=latents.dtype)
        noisy = self.pipe.scheduler.add_noise(latents, noise, t)
        cond = self._embed(prompt).to(dtype).expand(self.ensemble, -1, -1)  # (E, L, D)
        store: list[torch.Tensor] = []
        with _stop_after(unet.up_blocks[self.up_block], store):
            try:
                unet(noisy.to(dtype), t, encoder_hidden_states=cond)
            except _Captured:
                pass
        if not store:
            raise RuntimeError(f"unet.up_blocks[{self.up_block}] did not run")
        return store[0].float().mean(dim=0)  # (C, h', w'), ensemble average


def _sample_at(feat: torch.Tensor, points_rc: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Features of ``feat`` (C, h, w) bilinearly upsampled to ``size`` (align_corners=False), read at integer
    (row, col) pixels (N, 2) without building the full map -> (N, C)."""
    height, width = size
    gy = (2 * points_rc[:, 0].float() + 1) / height - 1  # pixel centre -> normalised coordinate
    gx = (2 * points_rc[:, 1].float() + 1) / width - 1
    grid = torch.stack([gx, gy], dim=-1).to(feat)[None, :, None]  # (1, N, 1, 2)
    out = F.grid_sample(feat[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, :, 0].T  # (N, C)


def _cosine_map(vecs: torch.Tensor, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cosine similarity of each (N, C) vector to every pixel of ``feat`` (C, h, w) upsampled to ``size``
    -> (N, H, W). Upsampling is done a chunk of channels at a time (SD-2.1 has 1280 channels)."""
    dot = vecs.new_zeros(len(vecs), *size)
    sq = vecs.new_zeros(1, *size)
    for c0 in range(0, feat.shape[0], _CHANNEL_CHUNK):
        up = F.interpolate(
            feat[None, c0 : c0 + _CHANNEL_CHUNK], size=size, mode="bilinear", align_corners=False
        )[0]  # (c, H, W)
        dot += torch.einsum("nc,chw->nhw", vecs[:, c0 : c0 + _CHANNEL_CHUNK], up)
        sq += up.pow(2).sum(dim=0, keepdim=True)
    return dot / (vecs.norm(dim=1)[:, None, None] * sq.sqrt() + 1e-8)


def match_points(
    src_feat: torch.Tensor,
    edit_feat: torch.Tensor,
    handles_xy: torch.Tensor,
    src_size: tuple[int, int],
    edit_size: tuple[int, int],
) -> torch.Tensor:
    """For each handle (x, y) in the source, the (x, y) pixel of the edit with the most similar feature."""
    h, w = src_size
    rc = torch.stack([handles_xy[:, 1].round().clamp(0, h - 1), handles_xy[:, 0].round().clamp(0, w - 1)], 1)
    vecs = _sample_at(src_feat, rc.long(), src_size)  # (N, C)
    cos = _cosine_map(vecs, edit_feat, edit_size).flatten(1)  # (N, H·W)
    idx = cos.argmax(dim=1)
    return torch.stack([idx % edit_size[1], idx // edit_size[1]], dim=1).float()  # (N, 2) (x, y)


def point_distances(
    featurizer: DiftFeaturizer, source: Image.Image, edited: Image.Image, instruction: DragInstruction
) -> list[float]:
    """Per pair: ‖target − matched point‖₂ in pixels of the edited image (the terms MD averages)."""
    src_feat = featurizer.features(source, instruction.prompt)
    edit_feat = featurizer.features(edited, instruction.prompt)
    handles = torch.tensor([p.as_tuple() for p in instruction.handles], dtype=torch.float32)
    targets = torch.tensor([p.as_tuple() for p in instruction.targets], dtype=torch.float32)
    sx, sy = edited.width / source.width, edited.height / source.height  # targets live on the source's grid
    found = match_points(
        src_feat, edit_feat, handles, (source.height, source.width), (edited.height, edited.width)
    )
    targets = targets * torch.tensor([sx, sy])
    return (found.cpu() - targets).norm(dim=1).tolist()
