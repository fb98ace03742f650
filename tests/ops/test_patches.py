from __future__ import annotations

from functools import partial

import torch

from dragdiff.ops import sample_patches


def _coords(patch: torch.Tensor) -> torch.Tensor:
    """(N, 2, P, P) patch of a coordinate map -> (N, P, P, 2) (row, col) sampled."""
    return patch.permute(0, 2, 3, 1)


def test_integer_centres_return_exact_coordinates(coord_map):
    feats = coord_map(8, 10)
    patches = sample_patches(feats, torch.tensor([[3.0, 4.0], [5.0, 1.0]]), radius=1)
    assert patches.shape == (2, 2, 3, 3)
    got = _coords(patches)
    # grid_sample normalises to [-1, 1] and back, so float32 may be off by an ulp
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
