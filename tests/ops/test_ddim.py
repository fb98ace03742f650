from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from dragdiff.ops import ddim_transfer


def _sd15_scheduler(prediction_type: str) -> DDIMScheduler:
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    sched.set_timesteps(50)
    return sched


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_step_matches_diffusers(prediction_type):
    sched = _sd15_scheduler(prediction_type)
    gen = torch.Generator().manual_seed(0)
    acp = sched.alphas_cumprod
    step = sched.config.num_train_timesteps // sched.num_inference_steps
    for t in [int(sched.timesteps[0]), 681, 301, int(sched.timesteps[-1])]:  # 981 ... 1 (last uses ᾱ_0)
        x = torch.randn(2, 4, 8, 8, generator=gen)
        out = torch.randn(2, 4, 8, 8, generator=gen)
        expected = sched.step(out, t, x, eta=0.0).prev_sample
        a_prev = acp[t - step] if t - step >= 0 else sched.final_alpha_cumprod
        got = ddim_transfer(x, out, acp[t], a_prev, prediction_type=prediction_type)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_inversion_then_denoising_with_the_same_eps_is_identity():
    acp = _sd15_scheduler("epsilon").alphas_cumprod.double()
    gen = torch.Generator().manual_seed(1)
    x_prev = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    x_t = ddim_transfer(x_prev, eps, acp[661], acp[681])  # inversion: less noisy -> more noisy
    torch.testing.assert_close(ddim_transfer(x_t, eps, acp[681], acp[661]), x_prev)
    assert x_t.dtype == torch.float64


def test_float_alphas_per_batch_alphas_and_gradients():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    eps = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    both = ddim_transfer(x, eps, torch.tensor([0.3, 0.5]), 0.6)
    torch.testing.assert_close(both[1], ddim_transfer(x[1], eps[1], 0.5, 0.6))
    both.sum().backward()
    assert x.grad is not None and eps.grad is not None and x.grad.abs().sum() > 0


def test_unknown_prediction_type_is_named():
    with pytest.raises(ValueError, match="'flow'"):
        ddim_transfer(torch.zeros(1), torch.zeros(1), 0.5, 0.6, prediction_type="flow")


def test_half_precision_samples_stay_half_and_close_to_fp32():
    acp = _sd15_scheduler("epsilon").alphas_cumprod
    gen = torch.Generator().manual_seed(3)
    x, eps = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    full = ddim_transfer(x, eps, acp[681], acp[661])
    half = ddim_transfer(x.bfloat16(), eps.bfloat16(), acp[681], acp[661])
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)
