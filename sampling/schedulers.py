"""Diffusion samplers as small pure functions.

A sampler takes a ``model(x_in, t)`` callable and unit-variance noise and returns the final latents. Each one
reproduces the arithmetic of a diffusers scheduler (DDIM, Euler, Euler ancestral, DPM-Solver++ 2M, UniPC bh2,
LCM) constructed with that class's defaults plus the keys of :class:`SchedulerConfig`, driven by the standard
diffusers loop. Operations are kept in the same order and dtype as diffusers so results agree bit for bit on
the same device; numpy's float64 ``linspace``/``arange``/``interp`` are re-expressed with Python floats and
float64 tensors. Schedule scalars stay on the CPU where diffusers keeps them there (UniPC's update runs on the
latents' device, as in diffusers); the model receives ``t`` on the latents' device, as a pipeline passes it.

Beyond diffusers: ``timestep_spacing="stride"`` is the DDIM schedule of VideoComposer / UniAnimate
(``diffusion_ddim.py``): every ``T // steps`` timesteps from ``steps_offset`` up, clamped to ``T - 1``, so
there are ``ceil(T / (T // steps))`` of them (6 steps run 7: 997, 831, ..., 1); with ``set_alpha_to_one=False``
DDIM's last step lands on ``alphas_cumprod[0]`` as there. Where that schedule starts at ``T - 1`` (zero SNR) the
reference divides 0 by 0; the v-prediction arithmetic here stays finite.

Deliberate deviation: for "trailing" spacing diffusers builds timesteps with ``np.arange`` over a float step,
which for some step counts (61, 103, 121, ... out of 1000) yields one extra timestep of -1. We always produce
exactly ``steps`` timesteps; they equal diffusers' first ``steps`` ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSampler = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]
SamplerFn = Callable[..., torch.Tensor]

_CHOICES = {
    "beta_schedule": ("linear", "scaled_linear"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "linspace", "trailing", "stride"),
}
_LCM_ORIGINAL_STEPS = 50
_LCM_TIMESTEP_SCALING = 10.0
_LCM_SIGMA_DATA = 0.5


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "v_prediction"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: str = "trailing"
    steps_offset: int = 1
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True

    def __post_init__(self):
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise ValueError(f"{key}={getattr(self, key)!r} is not valid; valid values: {', '.join(choices)}")
        for key in ("rescale_betas_zero_snr", "clip_sample", "set_alpha_to_one"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}={getattr(self, key)!r} is not valid; valid values: True, False")
        for key, low in (("num_train_timesteps", 2), ("steps_offset", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key}={value!r} is not valid; valid values: integers >= {low}")
        for key in ("beta_start", "beta_end", "clip_sample_range"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{key}={value!r} is not valid; valid values: finite numbers > 0")
            object.__setattr__(self, key, float(value))
        if not self.beta_start < self.beta_end < 1:
            raise ValueError(
                f"beta_start={self.beta_start}, beta_end={self.beta_end} are not valid; "
                "valid values: 0 < beta_start < beta_end < 1"
            )

    @classmethod
    def from_dict(cls, d: dict | None) -> "SchedulerConfig":
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown scheduler config keys {unknown}; valid keys: {', '.join(names)}")
        return cls(**d)


def _as_config(config) -> SchedulerConfig:
    if isinstance(config, SchedulerConfig):
        return config
    return SchedulerConfig.from_dict(config)


# ---------------------------------------------------------------------------------------------------- noise tables


def _betas(cfg: SchedulerConfig) -> torch.Tensor:
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float32)
    else:
        betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float32) ** 2
    if cfg.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    sqrt_ac = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac -= last
    sqrt_ac *= first / (first - last)
    ac = sqrt_ac**2
    return 1 - torch.cat([ac[0:1], ac[1:] / ac[:-1]])


def alphas_cumprod(config) -> torch.Tensor:
    """Cumulative alphas, float32, as DDIM/LCM build them (terminal value exactly 0 under zero-SNR rescaling)."""
    return torch.cumprod(1.0 - _betas(_as_config(config)), dim=0)


def _sigma_table(cfg: SchedulerConfig) -> torch.Tensor:
    """Per-train-timestep sigmas of the sigma-based schedulers, which floor the terminal alpha at 2**-24."""
    ac = alphas_cumprod(cfg)
    if cfg.rescale_betas_zero_snr:
        ac[-1] = 2**-24
    return ((1 - ac) / ac) ** 0.5


def _interp(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``np.interp(x, arange(len(table)), table)`` in float64, for x inside [0, len(table) - 1]."""
    fp = table.double()
    x = x.double()
    j = x.floor().long().clamp(max=len(fp) - 2)
    value = (fp[j + 1] - fp[j]) * (x - j.double()) + fp[j]
    exact = x == x.floor()
    return torch.where(exact, fp[x.long().clamp(max=len(fp) - 1)], value)


def _sigmas(cfg: SchedulerConfig, ts: torch.Tensor) -> torch.Tensor:
    return torch.cat([_interp(ts, _sigma_table(cfg)), torch.zeros(1, dtype=torch.float64)]).float()


def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha, sigma * alpha


def _lambda(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.log(alpha) - torch.log(sigma)


# ---------------------------------------------------------------------------------------------------- timesteps


def _np_linspace(start: float, stop: float, num: int) -> list[float]:
    if num == 1:
        return [float(start)]
    step = (stop - start) / (num - 1)
    values = [i * step + start for i in range(num)]
    values[-1] = float(stop)
    return values


def _np_arange(start: float, step: float, num: int) -> list[float]:
    """First ``num`` values of ``np.arange(start, stop, step)`` for a float step."""
    if num == 1:
        return [float(start)]
    second = start + step
    delta = second - start
    return [float(start), second] + [start + i * delta for i in range(2, num)]


def _spaced(cfg: SchedulerConfig, steps: int, *, multistep: bool, round_linspace: bool = True) -> list[float]:
    """Timesteps of set_timesteps: DDIM/Euler style, or DPM/UniPC style (``multistep``: one extra point dropped)."""
    T = cfg.num_train_timesteps
    points = steps + 1 if multistep else steps
    if cfg.timestep_spacing == "linspace":
        values = _np_linspace(0, T - 1, points)[::-1][:steps]
        return [float(round(v)) for v in values] if round_linspace else values
    if cfg.timestep_spacing == "stride":
        return [float(min(t + cfg.steps_offset, T - 1)) for t in reversed(range(0, T, T // steps))]
    if cfg.timestep_spacing == "leading":
        ratio = T // points
        return [float(i * ratio + cfg.steps_offset) for i in reversed(range(points - steps, points))]
    return [float(round(v) - 1) for v in _np_arange(T, -T / steps, steps)]


def _lcm_timesteps(cfg: SchedulerConfig, steps: int) -> list[float]:
    k = cfg.num_train_timesteps // _LCM_ORIGINAL_STEPS
    origin = [i * k - 1 for i in range(_LCM_ORIGINAL_STEPS, 0, -1)]
    return [float(origin[math.floor(i * (_LCM_ORIGINAL_STEPS / steps))]) for i in range(steps)]


def _timesteps(cfg: SchedulerConfig, steps: int, sampler: str) -> torch.Tensor:
    if sampler in ("euler", "euler_ancestral"):
        return torch.tensor(_spaced(cfg, steps, multistep=False, round_linspace=False), dtype=torch.float32)
    if sampler == "ddim":
        values = _spaced(cfg, steps, multistep=False)
    elif sampler in ("dpmpp_2m", "unipc"):
        values = _spaced(cfg, steps, multistep=True)
    else:
        values = _lcm_timesteps(cfg, steps)
    return torch.tensor(values, dtype=torch.float64).long()


def _check_steps(cfg: SchedulerConfig, steps: int, sampler: str) -> None:
    high = _LCM_ORIGINAL_STEPS if sampler == "lcm" else cfg.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= high:
        raise ValueError(f"{sampler}: steps={steps!r} is not valid; valid values: integers 1..{high}")


def timesteps(config, steps: int, sampler: str = "ddim") -> torch.Tensor:
    """The timesteps ``sampler`` passes to the model, in order (int64, or float32 for the Euler samplers)."""
    get_sampler(sampler)
    cfg = _as_config(config)
    _check_steps(cfg, steps, sampler)
    return _timesteps(cfg, steps, sampler)


# ---------------------------------------------------------------------------------------------------- shared steps


def _setup(name: str, config, steps: int, noise_sampler=None, *, stochastic=False):
    cfg = _as_config(config)
    _check_steps(cfg, steps, name)
    if stochastic and noise_sampler is None:
        raise ValueError(f"sampler {name!r} is stochastic and needs a noise_sampler")
    return cfg, _timesteps(cfg, steps, name)


def _emit(callback: Optional[Callback], i: int, total: int, t, x, denoised) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "t": t.to(x.device), "x": x, "denoised": denoised})


def _x0_from_alpha_sigma(prediction: str, x, out, alpha, sigma):
    if prediction == "epsilon":
        return (x - sigma * out) / alpha
    if prediction == "v_prediction":
        return alpha * x - sigma * out
    return out


def _x0_from_sigma(prediction: str, x, out, sigma):
    if prediction == "epsilon":
        return x - sigma * out
    if prediction == "v_prediction":
        return out * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
    return out


def _scale_in(x, sigma):
    return x / ((sigma**2 + 1) ** 0.5)


def _init_sigma(cfg: SchedulerConfig, sigmas: torch.Tensor) -> torch.Tensor:
    top = sigmas.max()
    return top if cfg.timestep_spacing in ("linspace", "trailing") else (top**2 + 1) ** 0.5


# ---------------------------------------------------------------------------------------------------- samplers


def sample_ddim(model: Model, noise, config, steps, *, noise_sampler=None, callback=None) -> torch.Tensor:
    """DDIMScheduler, eta 0."""
    cfg, ts = _setup("ddim", config, steps)
    ac = alphas_cumprod(cfg)
    final = torch.tensor(1.0) if cfg.set_alpha_to_one else ac[0]
    ratio = cfg.num_train_timesteps // steps
    steps = len(ts)
    x = noise
    for i, t in enumerate(ts):
        out = model(x, t.to(x.device))
        a_t = ac[t]
        prev = t - ratio
        a_prev = ac[prev] if prev >= 0 else final
        b_t = 1 - a_t
        if cfg.prediction_type == "epsilon":
            x0, eps = (x - b_t**0.5 * out) / a_t**0.5, out
        elif cfg.prediction_type == "sample":
            x0 = out
            eps = (x - a_t**0.5 * x0) / b_t**0.5
        else:
            x0 = a_t**0.5 * x - b_t**0.5 * out
            eps = a_t**0.5 * out + b_t**0.5 * x
        if cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        _emit(callback, i, steps, t, x, x0)
    return x


def sample_euler(model: Model, noise, config, steps, *, noise_sampler=None, callback=None) -> torch.Tensor:
    """EulerDiscreteScheduler (s_churn 0, final sigma 0)."""
    cfg, ts = _setup("euler", config, steps)
    steps = len(ts)
    sigmas = _sigmas(cfg, ts)
    x = noise * _init_sigma(cfg, sigmas)
    for i, t in enumerate(ts):
        sigma = sigmas[i]
        out = model(_scale_in(x, sigma), t.to(x.device))
        x0 = _x0_from_sigma(cfg.prediction_type, x, out, sigma)
        x = x + (x - x0) / sigma * (sigmas[i + 1] - sigma)
        _emit(callback, i, steps, t, x, x0)
    return x


def sample_euler_ancestral(
    model: Model, noise, config, steps, *, noise_sampler=None, callback=None
) -> torch.Tensor:
    """EulerAncestralDiscreteScheduler; draws one noise tensor per step, the last included."""
    cfg, ts = _setup("euler_ancestral", config, steps, noise_sampler, stochastic=True)
    steps = len(ts)
    sigmas = _sigmas(cfg, ts)
    x = noise * _init_sigma(cfg, sigmas)
    for i, t in enumerate(ts):
        sigma, sigma_to = sigmas[i], sigmas[i + 1]
        out = model(_scale_in(x, sigma), t.to(x.device))
        x0 = _x0_from_sigma(cfg.prediction_type, x, out, sigma)
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        x = x + (x - x0) / sigma * (sigma_down - sigma)
        x = x + noise_sampler(x) * sigma_up
        _emit(callback, i, steps, t, x, x0)
    return x


def sample_dpmpp_2m(model: Model, noise, config, steps, *, noise_sampler=None, callback=None) -> torch.Tensor:
    """DPMSolverMultistepScheduler: dpmsolver++, order 2, midpoint, first order on the first and last steps."""
    cfg, ts = _setup("dpmpp_2m", config, steps)
    steps = len(ts)
    sigmas = _sigmas(cfg, ts)
    x = noise
    prev_x0 = prev_lambda = None
    for i, t in enumerate(ts):
        out = model(x, t.to(x.device))
        alpha_s, sigma_s = _alpha_sigma(sigmas[i])
        alpha_t, sigma_t = _alpha_sigma(sigmas[i + 1])
        x0 = _x0_from_alpha_sigma(cfg.prediction_type, x, out, alpha_s, sigma_s)
        lambda_s = _lambda(alpha_s, sigma_s)
        h = _lambda(alpha_t, sigma_t) - lambda_s
        phi = alpha_t * (torch.exp(-h) - 1.0)
        x_next = (sigma_t / sigma_s) * x - phi * x0
        if prev_x0 is not None and i < steps - 1:
            d1 = (1.0 / ((lambda_s - prev_lambda) / h)) * (x0 - prev_x0)
            x_next = x_next - 0.5 * phi * d1
        x, prev_x0, prev_lambda = x_next, x0, lambda_s
        _emit(callback, i, steps, t, x, x0)
    return x


def _unipc_coefficients(h: torch.Tensor):
    """For x0-prediction, bh2: (h_phi_1, B_h, [b_1, b_2])."""
    hh = -h
    h_phi_1 = torch.expm1(hh)
    b_h = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b = []
    factorial = 1
    for k in (1, 2):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, b


def _unipc_update(x, m0, sig_from, sig_to, h_phi_1, b_h, residual):
    alpha_t, sigma_t = _alpha_sigma(sig_to)
    _, sigma_s0 = _alpha_sigma(sig_from)
    return sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0 - alpha_t * b_h * residual


def _one_term(rho: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    return torch.einsum("k,bkc...->bc...", rho, torch.stack([d1], dim=1))


def sample_unipc(model: Model, noise, config, steps, *, noise_sampler=None, callback=None) -> torch.Tensor:
    """UniPCMultistepScheduler: bh2, order 2, predict_x0, corrector on every step after the first."""
    cfg, ts = _setup("unipc", config, steps)
    steps = len(ts)
    sigmas = _sigmas(cfg, ts)
    device = noise.device
    sig_dev = sigmas.to(device)
    lambdas = [_lambda(*_alpha_sigma(s)) for s in sig_dev]
    half = torch.ones(1, dtype=noise.dtype, device=device) * 0.5
    x = noise
    x0s: list[torch.Tensor] = []
    last_x = None
    order = 1
    for i, t in enumerate(ts):
        out = model(x, t.to(x.device))
        x0 = _x0_from_alpha_sigma(cfg.prediction_type, x, out, *_alpha_sigma(sigmas[i]))
        if last_x is not None:
            h = lambdas[i] - lambdas[i - 1]
            h_phi_1, b_h, b = _unipc_coefficients(h)
            if order == 1:
                rho_c = half
                corr = 0
            else:
                rk = (lambdas[i - 2] - lambdas[i - 1]) / h
                rks = torch.stack([rk, torch.ones((), device=device)])
                rho_c = torch.linalg.solve(torch.stack([rks**0, rks**1]), torch.stack(b)).to(x.dtype)
                corr = _one_term(rho_c[:-1], (x0s[-2] - x0s[-1]) / rk)
            residual = corr + rho_c[-1] * (x0 - x0s[-1])
            x = _unipc_update(last_x, x0s[-1], sig_dev[i - 1], sig_dev[i], h_phi_1, b_h, residual)
        x0s = (x0s + [x0])[-2:]
        order = min(2, steps - i, i + 1)
        last_x = x
        h = lambdas[i + 1] - lambdas[i]
        h_phi_1, b_h, _ = _unipc_coefficients(h)
        if order == 2:
            rk = (lambdas[i - 1] - lambdas[i]) / h
            residual = _one_term(half, (x0s[-2] - x0) / rk)
        else:
            residual = 0
        x = _unipc_update(x, x0, sig_dev[i], sig_dev[i + 1], h_phi_1, b_h, residual).to(last_x.dtype)
        _emit(callback, i, steps, t, x, x0)
    return x


def sample_lcm(model: Model, noise, config, steps, *, noise_sampler=None, callback=None) -> torch.Tensor:
    """LCMScheduler (original_inference_steps 50, timestep_scaling 10); ignores timestep_spacing/steps_offset."""
    cfg, ts = _setup("lcm", config, steps, noise_sampler, stochastic=True)
    ac = alphas_cumprod(cfg)
    x = noise
    for i, t in enumerate(ts):
        out = model(x, t.to(x.device))
        prev = ts[i + 1] if i + 1 < steps else t
        a_t, a_prev = ac[t], ac[prev]
        b_t, b_prev = 1 - a_t, 1 - a_prev
        scaled = t.to(x.device) * _LCM_TIMESTEP_SCALING
        c_skip = _LCM_SIGMA_DATA**2 / (scaled**2 + _LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + _LCM_SIGMA_DATA**2) ** 0.5
        if cfg.prediction_type == "epsilon":
            x0 = (x - b_t.sqrt() * out) / a_t.sqrt()
        elif cfg.prediction_type == "sample":
            x0 = out
        else:
            x0 = a_t.sqrt() * x - b_t.sqrt() * out
        if cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        denoised = c_out * x0 + c_skip * x
        x = denoised
        if i + 1 < steps:
            x = a_prev.sqrt() * denoised + b_prev.sqrt() * noise_sampler(denoised)
        _emit(callback, i, steps, t, x, denoised)
    return x


SAMPLERS: dict[str, SamplerFn] = {
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
    "lcm": sample_lcm,
}


def get_sampler(name: str) -> SamplerFn:
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r}; valid choices: {', '.join(SAMPLERS)}") from None
