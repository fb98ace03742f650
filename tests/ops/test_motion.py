from __future__ import annotations

import torch

from dragdiff.ops import motion_loss, reached


def test_reached_uses_euclidean_distance_strictly():
    h = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    g = torch.tensor([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    assert reached(h, g, 2.0).tolist() == [True, False, True]


def test_loss_on_coordinate_map_equals_hand_computed_value(coord_map):
    feats = coord_map(10, 10)
    # pair 1: straight right, d = (0, 1): |drow| = 0, |dcol| = 1 -> mean over 2 channels = 0.5, x 9 = 4.5
    # pair 2: d = (3, 4)/5: |drow| = 0.6, |dcol| = 0.8 -> mean 0.7, x 9 = 6.3
    h = torch.tensor([[4.0, 4.0], [3.0, 3.0]])
    g = torch.tensor([[4.0, 8.0], [6.0, 7.0]])
    torch.testing.assert_close(motion_loss(feats, h[:1], g[:1], r_m=1), torch.tensor(4.5))
    torch.testing.assert_close(motion_loss(feats, h, g, r_m=1), torch.tensor(4.5 + 6.3))
    # r_m = 0: a single pixel, (2*0+1)^2 = 1 times the mean
    torch.testing.assert_close(motion_loss(feats, h, g, r_m=0), torch.tensor(0.5 + 0.7))


def test_loss_on_random_map_matches_slices_for_axis_aligned_moves(gen):
    feats = torch.randn(1, 6, 12, 12, generator=gen)
    h = torch.tensor([[5.0, 5.0]])
    loss_down = motion_loss(feats, h, torch.tensor([[11.0, 5.0]]), r_m=1)
    src, dst = feats[0, :, 4:7, 4:7], feats[0, :, 5:8, 4:7]
    torch.testing.assert_close(loss_down, 9 * (dst - src).abs().mean())
    assert loss_down.dim() == 0


def test_inactive_pairs_contribute_nothing(gen):
    feats = torch.randn(1, 4, 12, 12, generator=gen)
    h = torch.tensor([[3.0, 3.0], [8.0, 8.0]])
    g = torch.tensor([[3.0, 9.0], [1.0, 8.0]])
    only_first = motion_loss(feats, h[:1], g[:1], r_m=1)
    masked = motion_loss(feats, h, g, r_m=1, active=torch.tensor([True, False]))
    torch.testing.assert_close(masked, only_first)
    assert motion_loss(feats, h, g, r_m=1, active=torch.tensor([False, False])) == 0
    # a pair already at its target has no direction and no loss
    assert motion_loss(feats, h, h.clone(), r_m=1) == 0


def test_gradient_flows_only_through_the_shifted_patch(gen):
    feats = torch.randn(1, 3, 10, 10, generator=gen, requires_grad=True)
    h = torch.tensor([[5.0, 5.0]])
    motion_loss(feats, h, torch.tensor([[5.0, 9.0]]), r_m=1).backward()  # d = (0, 1)
    touched = feats.grad[0].abs().sum(0) > 0  # (H, W)
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[4:7, 5:8] = True  # shifted square: rows 4..6, cols 5..7; the source column 4 gets nothing
    assert torch.equal(touched, expected)


def test_border_handles_do_not_crash_and_keep_gradients(gen):
    feats = torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([[0.0, 0.0], [7.0, 7.0]], dtype=torch.float64)
    g = torch.tensor([[-5.0, 0.0], [7.0, 20.0]], dtype=torch.float64)  # pointing off the grid
    loss = motion_loss(feats, h, g, r_m=2)
    assert torch.isfinite(loss) and loss.dtype == torch.float64
    loss.backward()
    assert torch.isfinite(feats.grad).all()


def test_inputs_are_not_mutated(gen):
    feats = torch.randn(1, 3, 8, 8, generator=gen)
    h, g = torch.tensor([[2.0, 2.0]]), torch.tensor([[6.0, 5.0]])
    copies = [t.clone() for t in (feats, h, g)]
    motion_loss(feats, h, g, r_m=1, active=torch.tensor([True]))
    assert all(torch.equal(a, b) for a, b in zip((feats, h, g), copies, strict=True))
