from __future__ import annotations

import numpy as np
import torch

from dragdiff.ops import mask_term, resize_mask


def test_resize_mask_is_nearest_and_shaped_for_latents():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4, :4] = True  # top-left quadrant editable
    small = resize_mask(mask, (2, 2))
    assert small.shape == (1, 1, 2, 2) and small.dtype == torch.float32
    assert small[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    big = resize_mask(torch.tensor([[0, 1], [1, 0]]), (4, 6))
    assert set(big.unique().tolist()) == {0.0, 1.0}  # nearest: never blended
    assert big[0, 0, :2, 3:].eq(1).all() and big[0, 0, :2, :3].eq(0).all()


def test_resize_mask_accepts_numpy_and_dtype():
    small = resize_mask(np.ones((5, 7), dtype=bool), (3, 3), dtype=torch.float64)
    assert small.dtype == torch.float64 and small.eq(1).all()


def test_mask_term_sums_only_outside_the_editable_region():
    x_ref = torch.zeros(1, 2, 2, 2)
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]], [[0.5, 0.5], [0.5, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2): top-left editable
    # outside the mask: |-2| + 3 + 4 + 3 * 0.5 = 10.5, times λ
    torch.testing.assert_close(mask_term(x, x_ref, mask, lam=0.1), torch.tensor(1.05))
    assert mask_term(x, x_ref, torch.ones(1, 1, 2, 2), lam=0.1) == 0


def test_mask_term_gradient_reaches_x_prev_outside_the_mask_only():
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x_ref = torch.zeros(1, 4, 3, 3, requires_grad=True)
    mask = torch.zeros(1, 1, 3, 3)
    mask[..., 1, 1] = 1
    mask_term(x, x_ref, mask, lam=0.5).backward()
    assert x.grad is not None and x.grad[..., 1, 1].eq(0).all()
    assert x.grad.abs().sum(1)[0].gt(0).sum() == 8
    assert x_ref.grad is None  # the reference latent is a constant target
