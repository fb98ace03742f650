"""Deterministic DDIM (η = 0) moves between noise levels, re-derived so gradients flow through them.

Paper notation (Song et al., DDIM Eq. 12 with σ = 0): ᾱ the cumulative alpha product (``alphas_cumprod``),
x the sample at ᾱ_from, ε the predicted noise, x̂_0 the predicted clean sample.
    x̂_0 = (x - √(1-ᾱ_from) ε) / √ᾱ_from
    x'  = √ᾱ_to x̂_0 + √(1-ᾱ_to) ε
Denoising uses ᾱ_from = ᾱ_t, ᾱ_to = ᾱ_prev; inversion uses ᾱ_from = ᾱ_prev (less noisy), ᾱ_to = ᾱ_t.
For v-prediction (Salimans & Ho) v = √ᾱ ε - √(1-ᾱ) x_0, so x̂_0 = √ᾱ x - √(1-ᾱ) v and ε = √ᾱ v + √(1-ᾱ) x.
Checked against diffusers' ``DDIMScheduler.step`` in tests/ops/test_ddim.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def _coefficients(alpha: Tensor | float, like: Tensor) -> tuple[Tensor, Tensor]:
    """(√ᾱ, √(1-ᾱ)) in ``like``'s dtype, computed in at least fp32; a 1-D ᾱ gives one value per batch item."""
    work = torch.promote_types(like.dtype, torch.float32)
    if isinstance(alpha, Tensor):
        a = alpha.to(device=like.device, dtype=work)
    else:  # a fill on the device (no host copy, so it can run in a CUDA graph), rounded as as_tensor would
        a = torch.full((), alpha, dtype=torch.get_default_dtype(), device=like.device).to(work)
    if a.dim() == 1 and a.numel() > 1:  # one alpha per batch item
        a = a.reshape(-1, *([1] * (like.dim() - 1)))  # (B, 1, 1, 1)
    return a.sqrt().to(like.dtype), (1 - a).sqrt().to(like.dtype)


def predict_x0_eps(
    sample: Tensor, model_output: Tensor, alpha: Tensor | float, prediction_type: str = "epsilon"
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε) from the model output at noise level ᾱ, for any of ``PREDICTION_TYPES``."""
    sa, sb = _coefficients(alpha, sample)
    if prediction_type == "epsilon":
        return (sample - sb * model_output) / sa, model_output
    if prediction_type == "v_prediction":
        return sa * sample - sb * model_output, sa * model_output + sb * sample
    if prediction_type == "sample":
        return model_output, (sample - sa * model_output) / sb
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def ddim_transfer(
    sample: Tensor,
    model_output: Tensor,
    alpha_from: Tensor | float,
    alpha_to: Tensor | float,
    prediction_type: str = "epsilon",
) -> Tensor:
    """DDIM Eq. 12 (η = 0): move ``sample`` from noise level ᾱ_from to ᾱ_to using the model's prediction."""
    x0, eps = predict_x0_eps(sample, model_output, alpha_from, prediction_type)
    sa_to, sb_to = _coefficients(alpha_to, sample)
    return sa_to * x0 + sb_to * eps
