from __future__ import annotations

import torch

from dragdiff.ops import features_at, track_points


def _brute_force(features, reference, handles, r_p):
    """A plain loop over the clipped window, the way the paper states Eq. 4."""
    _, _, h, w = features.shape
    out = []
    for (r0, c0), ref in zip(handles.round().long().tolist(), reference, strict=True):
        best, best_d = None, float("inf")
        for r in range(max(0, r0 - r_p), min(h, r0 + r_p + 1)):
            for c in range(max(0, c0 - r_p), min(w, c0 + r_p + 1)):
                d = (features[0, :, r, c] - ref).abs().sum().item()
                if d < best_d:
                    best, best_d = (r, c), d
        out.append(best)
    return torch.tensor(out, dtype=torch.float32)


def test_coordinate_map_finds_the_reference_point_inside_the_window(coord_map):
    feats = coord_map(16, 16)
    handles = torch.tensor([[4.0, 5.0], [10.0, 10.0]])
    reference = torch.tensor([[5.0, 7.0], [8.0, 13.0]])  # the features at (5, 7) and (8, 13)
    assert track_points(feats, reference, handles, r_p=3).tolist() == [[5.0, 7.0], [8.0, 13.0]]


def test_coordinate_map_outside_the_window_stops_at_the_nearest_window_point(coord_map):
    feats = coord_map(16, 16)
    # best L1 towards (12, 12) within rows 1..7, cols 2..8 is the window corner (7, 8)
    out = track_points(feats, torch.tensor([[12.0, 12.0]]), torch.tensor([[4.0, 5.0]]), r_p=3)
    assert out.tolist() == [[7.0, 8.0]]


def test_window_is_clipped_at_the_borders(coord_map):
    feats = coord_map(9, 11)
    handles = torch.tensor([[1.0, 1.0], [8.0, 10.0], [0.0, 10.0]])
    reference = torch.tensor([[-5.0, -5.0], [30.0, 30.0], [-4.0, 40.0]])  # features beyond every border
    out = track_points(feats, reference, handles, r_p=3)
    assert out.tolist() == [[0.0, 0.0], [8.0, 10.0], [0.0, 10.0]]


def test_matches_brute_force_on_random_features(gen):
    feats = torch.randn(1, 8, 12, 14, generator=gen)
    handles = torch.tensor([[0.0, 0.0], [6.0, 7.0], [11.0, 13.0], [2.0, 12.0], [9.0, 1.0]])
    reference = torch.randn(5, 8, generator=gen)
    out = track_points(feats, reference, handles, r_p=3)
    assert torch.equal(out, _brute_force(feats, reference, handles, 3))


def test_returns_the_exact_match_and_leaves_inputs_alone(gen):
    feats = torch.randn(1, 8, 12, 12, generator=gen, requires_grad=True)
    handles = torch.tensor([[5.0, 5.0]])
    reference = feats[0, :, 7, 3][None].detach().clone()  # the feature two rows down, two columns left
    copies = (feats.detach().clone(), handles.clone(), reference.clone())
    out = track_points(feats, reference, handles, r_p=2)
    assert out.tolist() == [[7.0, 3.0]] and not out.requires_grad
    assert torch.equal(feats.detach(), copies[0]) and torch.equal(handles, copies[1])
    assert torch.equal(reference, copies[2])


def test_r_p_zero_keeps_handles_and_dtype_follows_handles(coord_map):
    feats = coord_map(6, 6, torch.float64)
    handles = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    out = track_points(feats, torch.tensor([[0.0, 0.0]], dtype=torch.float64), handles, r_p=0)
    assert out.tolist() == [[2.0, 3.0]] and out.dtype == torch.float64


def test_features_at_reads_grid_points_for_the_reference(coord_map, gen):
    feats = coord_map(9, 11)
    assert features_at(feats, torch.tensor([[3.0, 4.0], [8.0, 10.0], [20.0, -1.0]])).tolist() == [
        [3.0, 4.0],
        [8.0, 10.0],
        [8.0, 0.0],  # clamped into the grid
    ]
    random = torch.randn(1, 8, 12, 12, generator=gen)
    handles = torch.tensor([[2.0, 9.0], [10.0, 4.0]])
    moved = handles + torch.tensor([[1.0, -2.0], [-3.0, 0.0]])
    assert torch.equal(track_points(random, features_at(random, moved), handles, r_p=3), moved)
