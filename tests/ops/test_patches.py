from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from dragdiff.ops import sample_patches
from dragdiff.ops.patches import patch_offsets


def _coords(patch: torch.Tensor) -> torch.Tensor:
    """(N, 2, P, P) patch of a coordinate map -> (N, P, P, 2) (row, col) sampled."""
    return patch.permute(0, 2, 3, 1)


def test_integer_centres_return_exact_coordinates(coord_map):
    feats = coord_map(8, 10)
    patches = sample_patches(feats, torch.tensor([[3.0, 4.0], [5.0, 1.0]]), radius=1)
    assert patches.shape == (2, 2, 3, 3)
    got = _coords(patches)
    close = partial(torch.testing.assert_close, rtol=0, atol=1e-5)
    close(got[0, 0, 0], torch.tensor([2.0, 3.0]))  # top-left of the square around (3, 4)
    close(got[0, 2, 2], torch.tensor([4.0, 5.0]))
    close(got[1, 1, 1], torch.tensor([5.0, 1.0]))
    close(got[1, 0, 2], torch.tensor([4.0, 2.0]))  # row-major: first row, last column


def test_fractional_centres_are_bilinear(coord_map):
    feats = coord_map(8, 10, torch.float64)
    centre = torch.tensor([[2.25, 6.6]], dtype=torch.float64)
    patches = sample_patches(feats, centre, radius=2)
    offsets = torch.arange(-2, 3, dtype=torch.float64)
    expected_rows = (2.25 + offsets)[:, None].expand(5, 5)
    expected_cols = (6.6 + offsets)[None, :].expand(5, 5)
    torch.testing.assert_close(patches[0, 0], expected_rows)
    torch.testing.assert_close(patches[0, 1], expected_cols)


def test_integer_centres_match_slicing_on_random_features(gen):
    feats = torch.randn(1, 5, 9, 9, generator=gen)
    patch = sample_patches(feats, torch.tensor([[4.0, 6.0]]), radius=2)
    torch.testing.assert_close(patch[0], feats[0, :, 2:7, 4:9])


def test_border_patches_clamp_instead_of_crashing(coord_map):
    feats = coord_map(6, 7)
    patches = sample_patches(feats, torch.tensor([[0.0, 0.0], [5.0, 6.0], [-3.0, 20.0]]), radius=2)
    got = _coords(patches).double()
    close = partial(torch.testing.assert_close, rtol=0, atol=1e-5)
    close(got[0, 0, 0], torch.tensor([0.0, 0.0], dtype=torch.float64))  # (-2, -2) clamps to the corner
    close(got[0, 4, 4], torch.tensor([2.0, 2.0], dtype=torch.float64))
    close(got[1, 4, 4], torch.tensor([5.0, 6.0], dtype=torch.float64))  # (7, 8) clamps to the far corner
    close(got[1, 0, 0], torch.tensor([3.0, 4.0], dtype=torch.float64))
    close(got[2, ..., 0], torch.zeros(5, 5, dtype=torch.float64))  # entirely outside: nearest border
    close(got[2, ..., 1], torch.full((5, 5), 6.0, dtype=torch.float64))


def test_gradient_flows_to_features_and_inputs_untouched():
    feats = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    centres = torch.tensor([[2.5, 3.5]])
    before = centres.clone()
    sample_patches(feats, centres, radius=1).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert torch.equal(centres, before)


def _grid_sample_patches(features: torch.Tensor, centers: torch.Tensor, radius: int) -> torch.Tensor:
    """The former implementation: F.grid_sample, border padding, align_corners=True."""
    _, c, h, w = features.shape
    p, n = 2 * radius + 1, centers.shape[0]
    pts = centers.to(features)[:, None, None, :] + patch_offsets(radius, features)  # (N, P, P, 2)
    grid = pts.flip(-1) * pts.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)]) - 1.0  # (x, y)
    out = F.grid_sample(
        features, grid.reshape(1, n, p * p, 2), mode="bilinear", padding_mode="border", align_corners=True
    )  # (1, C, N, P*P)
    return out[0].reshape(c, n, p, p).transpose(0, 1)  # (N, C, P, P)


def _forward_and_grad(fn, feats, centres, radius, grad_out):
    out = fn(feats, centres, radius)
    (grad,) = torch.autograd.grad(out, feats, grad_out)
    return out, grad


def _centres(gen, h, w, n, dtype, lattice=None):
    """(n, 2) centres from 4 px before the grid to 4 px past its far edge: patches cross every border."""
    c = torch.rand(n, 2, generator=gen, dtype=dtype) * torch.tensor([h + 8.0, w + 8.0], dtype=dtype) - 4
    return c if lattice is None else (c * lattice).round() / lattice


@pytest.mark.parametrize("radius", [0, 1, 3])
@pytest.mark.parametrize("hw", [(9, 17), (33, 17), (40, 96), (1, 5), (2, 2), (256, 256)])
def test_matches_grid_sample_in_float64(gen, hw, radius: int) -> None:
    feats = torch.randn(1, 6, *hw, generator=gen, dtype=torch.float64, requires_grad=True)
    centres = _centres(gen, *hw, 12, torch.float64)
    grad_out = torch.randn(12, 6, 2 * radius + 1, 2 * radius + 1, generator=gen, dtype=torch.float64)
    ref, g_ref = _forward_and_grad(_grid_sample_patches, feats, centres, radius, grad_out)
    got, g_got = _forward_and_grad(sample_patches, feats, centres, radius, grad_out)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("radius", [1, 3])
@pytest.mark.parametrize("hw", [(9, 17), (33, 17), (5, 65), (2, 3)])
def test_matches_grid_sample_in_float32(gen, hw, radius: int) -> None:
    # H-1, W-1 powers of two and centres on a 1/64 lattice: grid_sample's trip through [-1, 1] is exact, so
    # the only differences are the order of the bilinear sums (elsewhere grid_sample is off by ~1e-7·W px)
    feats = torch.randn(1, 5, *hw, generator=gen, requires_grad=True)
    centres = _centres(gen, *hw, 10, torch.float32, lattice=64)
    grad_out = torch.randn(10, 5, 2 * radius + 1, 2 * radius + 1, generator=gen)
    ref, g_ref = _forward_and_grad(_grid_sample_patches, feats, centres, radius, grad_out)
    got, g_got = _forward_and_grad(sample_patches, feats, centres, radius, grad_out)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=1e-5)
