from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dragdiff.ops import bilinear_matrix, resize_bilinear

SIZES_1D = [(9, 30), (17, 4), (48, 101), (32, 200), (64, 17), (1, 5), (5, 1)]  # (in, out) along one axis
# (H, W) -> (h, w): up, down, non-square, mixed, size 1 on either side, identity
SHAPES = [
    ((8, 8), (32, 32)),
    ((5, 7), (13, 3)),
    ((17, 9), (4, 30)),
    ((64, 48), (17, 101)),
    ((32, 32), (200, 256)),
    ((1, 6), (3, 1)),
    ((3, 3), (3, 3)),
]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("src", "dst"), SHAPES)
def test_matches_interpolate_forward_and_backward(gen, src, dst, align_corners: bool) -> None:
    x = torch.randn(2, 3, *src, generator=gen, requires_grad=True)
    ref = F.interpolate(x, size=dst, mode="bilinear", align_corners=align_corners)
    got = resize_bilinear(x, dst, align_corners=align_corners)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    grad_out = torch.randn(ref.shape, generator=gen)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    (g_got,) = torch.autograd.grad(got, x, grad_out)
    # an input pixel's gradient sums up to (h/H)·(w/W)·4 terms; fp32 sums in another order differ by ulps
    torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), SHAPES)
def test_gradient_in_float64(gen, src, dst) -> None:
    x = torch.randn(1, 2, *src, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = F.interpolate(x, size=dst, mode="bilinear", align_corners=False)
    got = resize_bilinear(x, dst)
    grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    (g_got,) = torch.autograd.grad(got, x, grad_out)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("n_in", "n_out"), SIZES_1D)
def test_matrix_is_interpolate_of_identity(n_in: int, n_out: int, align_corners: bool) -> None:
    # the weights themselves, bit for bit: resizing the identity along one axis gives Aᵀ
    eye = torch.eye(n_in)[None, None]  # (1, 1, n_in, n_in)
    ref = F.interpolate(eye, size=(n_in, n_out), mode="bilinear", align_corners=align_corners)[0, 0].T
    a = bilinear_matrix(n_in, n_out, align_corners=align_corners, dtype=torch.float32, device="cpu")
    assert a.shape == (n_out, n_in)
    torch.testing.assert_close(a, ref, rtol=0, atol=0)


def test_rejects_non_4d_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        resize_bilinear(torch.zeros(3, 4, 4), (8, 8))
