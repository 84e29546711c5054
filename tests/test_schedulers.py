"""The samplers against diffusers' schedulers (the oracle), driven by the standard diffusers loop.

Tolerance: exact. Latents, model inputs and timesteps must be bitwise equal (assert_close with atol=rtol=0),
because sampling/schedulers.py mirrors diffusers' float32 operation order.
"""

import ast
import dataclasses
import inspect
import pathlib

import pytest
import torch

from poseanimate.sampling import schedulers as S

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 __array__ notices from diffusers

CLASSES = {
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_ancestral": diffusers.EulerAncestralDiscreteScheduler,
    "dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
    "unipc": diffusers.UniPCMultistepScheduler,
    "lcm": diffusers.LCMScheduler,
}
STOCHASTIC = {"euler_ancestral", "lcm"}
EXACT = dict(atol=0, rtol=0)

CONFIGS = {
    "animate_anyone_linear": S.SchedulerConfig(beta_schedule="linear"),
    "animate_anyone_scaled_linear": S.SchedulerConfig(),
    "sd_epsilon_leading": S.SchedulerConfig(
        prediction_type="epsilon", rescale_betas_zero_snr=False, timestep_spacing="leading"
    ),
    "linspace_v_zero_snr": S.SchedulerConfig(timestep_spacing="linspace"),
    "linspace_epsilon": S.SchedulerConfig(
        timestep_spacing="linspace", prediction_type="epsilon", rescale_betas_zero_snr=False
    ),
    "sample_clipped": S.SchedulerConfig(
        beta_schedule="linear", prediction_type="sample", rescale_betas_zero_snr=False,
        timestep_spacing="leading", clip_sample=True, clip_sample_range=0.5,
    ),
}
W = torch.linspace(-1.5, 1.5, 4 * 8 * 8).reshape(4, 8, 8)


def reference_scheduler(name, cfg):
    cls = CLASSES[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in accepted})


def fake_model(calls):
    def model(x, t):
        calls.append((x.clone(), t.clone()))
        return torch.tanh(x * W + t / 1000) + 0.1 * x.flip(1)

    return model


def run_diffusers(name, cfg, steps, noise, seed=7):
    scheduler = reference_scheduler(name, cfg)
    scheduler.set_timesteps(steps)
    calls, generator = [], torch.Generator().manual_seed(seed)
    model = fake_model(calls)
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(latents, t), t)
        extra = {"generator": generator} if name in STOCHASTIC else {}
        latents = scheduler.step(out, t, latents, **extra).prev_sample
    return latents, calls


def run_ours(name, cfg, steps, noise, seed=7, callback=None):
    calls, generator = [], torch.Generator().manual_seed(seed)

    def noise_sampler(x):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)

    latents = S.get_sampler(name)(fake_model(calls), noise, cfg, steps, noise_sampler=noise_sampler, callback=callback)
    return latents, calls


@pytest.fixture(scope="module")
def noise():
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


# diffusers' EulerAncestralDiscreteScheduler has no prediction_type='sample': that pair is checked by
# test_euler_ancestral_sample_prediction instead.
PAIRS = [(n, c) for n in S.SAMPLERS for c in CONFIGS
         if not (n == "euler_ancestral" and CONFIGS[c].prediction_type == "sample")]


@pytest.mark.parametrize("steps", [1, 4, 20, 25])
@pytest.mark.parametrize("name,config_name", PAIRS)
def test_sampler_matches_diffusers(name, config_name, steps, noise):
    cfg = CONFIGS[config_name]
    expected, expected_calls = run_diffusers(name, cfg, steps, noise)
    actual, actual_calls = run_ours(name, cfg, steps, noise)
    assert len(actual_calls) == len(expected_calls) == steps
    for (x_ours, t_ours), (x_ref, t_ref) in zip(actual_calls, expected_calls):
        assert t_ours.dtype == t_ref.dtype and t_ours.shape == t_ref.shape == ()
        assert torch.equal(t_ours, t_ref)
        torch.testing.assert_close(x_ours, x_ref, **EXACT)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(actual, expected, **EXACT)


@pytest.mark.parametrize("config_name", ["animate_anyone_linear", "sd_epsilon_leading", "linspace_v_zero_snr"])
@pytest.mark.parametrize("name", list(S.SAMPLERS))
def test_timesteps_and_sigmas_match_diffusers_for_many_step_counts(name, config_name):
    cfg = CONFIGS[config_name]
    for steps in range(1, 51 if name == "lcm" else 201):
        scheduler = reference_scheduler(name, cfg)
        scheduler.set_timesteps(steps)
        ours = S.timesteps(cfg, steps, name)
        reference = scheduler.timesteps
        if len(reference) == steps + 1:
            # diffusers' np.arange quirk for "trailing" (e.g. 61 steps): an extra trailing timestep of -1
            assert cfg.timestep_spacing == "trailing" and reference[-1].item() == -1, steps
            reference = reference[:steps]
        assert ours.dtype == reference.dtype and torch.equal(ours, reference), steps
        if name in ("euler", "euler_ancestral", "dpmpp_2m", "unipc") and len(scheduler.timesteps) == steps:
            assert torch.equal(S._sigmas(cfg, ours), scheduler.sigmas), steps


def test_trailing_quirk_step_count_still_gives_requested_steps(noise):
    cfg = CONFIGS["animate_anyone_linear"]
    scheduler = reference_scheduler("ddim", cfg)
    scheduler.set_timesteps(61)
    assert len(scheduler.timesteps) == 62
    out, calls = run_ours("ddim", cfg, 61, noise)
    assert torch.equal(torch.stack([t for _, t in calls]), scheduler.timesteps[:61])
    assert calls[-1][1].item() == 15 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(S.SAMPLERS))
def test_timesteps_are_what_the_model_sees(name, noise):
    cfg = CONFIGS["animate_anyone_scaled_linear"]
    _, calls = run_ours(name, cfg, 6, noise)
    seen = torch.stack([t for _, t in calls])
    assert torch.equal(S.timesteps(cfg, 6, name), seen)
    assert S.timesteps(cfg, 6, name).dtype == seen.dtype


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_alphas_cumprod_matches_diffusers(config_name):
    cfg = CONFIGS[config_name]
    ours = S.alphas_cumprod(cfg)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference_scheduler("ddim", cfg).alphas_cumprod, **EXACT)
    if cfg.rescale_betas_zero_snr:
        assert ours[-1].item() == 0.0
        assert reference_scheduler("euler", cfg).alphas_cumprod[-1].item() == 2**-24


@pytest.mark.parametrize("name", list(S.SAMPLERS))
def test_callback_once_per_step(name, noise):
    cfg = CONFIGS["animate_anyone_scaled_linear"]
    seen = []
    out, calls = run_ours(name, cfg, 5, noise, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    for info, (_, t) in zip(seen, calls):
        assert set(info) == {"i", "total", "t", "x", "denoised"}
        assert info["total"] == 5 and torch.equal(info["t"], t)
        assert info["x"].shape == info["denoised"].shape == noise.shape
    assert torch.equal(seen[-1]["x"], out)


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_samplers_need_noise_sampler(name, noise):
    with pytest.raises(ValueError, match=name):
        S.get_sampler(name)(lambda x, t: x, noise, S.SchedulerConfig(), 4)


def test_get_sampler_lists_choices():
    assert S.get_sampler("ddim") is S.sample_ddim
    with pytest.raises(ValueError) as error:
        S.get_sampler("heun")
    for choice in S.SAMPLERS:
        assert choice in str(error.value)
    with pytest.raises(ValueError, match="dpmpp_2m"):
        S.timesteps(S.SchedulerConfig(), 4, "nope")


def test_step_count_validation(noise):
    with pytest.raises(ValueError, match="1..50"):
        S.timesteps(S.SchedulerConfig(), 51, "lcm")
    with pytest.raises(ValueError, match="steps"):
        S.sample_ddim(lambda x, t: x, noise, S.SchedulerConfig(), 0)


def test_from_dict():
    assert S.SchedulerConfig.from_dict(None) == S.SchedulerConfig()
    cfg = S.SchedulerConfig.from_dict({"beta_schedule": "linear", "steps_offset": 0})
    assert cfg.beta_schedule == "linear" and cfg.steps_offset == 0
    assert S.SchedulerConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    assert S.sample_ddim(lambda x, t: x * 0, torch.ones(1, 1, 1, 1), {"beta_schedule": "linear"}, 2).shape == (1, 1, 1, 1)

    with pytest.raises(ValueError) as error:
        S.SchedulerConfig.from_dict({"_class_name": "DDIMScheduler"})
    assert "_class_name" in str(error.value)
    for field in dataclasses.fields(S.SchedulerConfig):
        assert field.name in str(error.value)

    bad_values = {
        "beta_schedule": ("squaredcos_cap_v2", "scaled_linear"),
        "prediction_type": ("flow", "v_prediction"),
        "timestep_spacing": ("karras", "trailing"),
        "rescale_betas_zero_snr": ("yes", "True"),
        "num_train_timesteps": (0, "integers"),
        "beta_start": (-1.0, "> 0"),
    }
    for key, (value, valid) in bad_values.items():
        with pytest.raises(ValueError) as error:
            S.SchedulerConfig.from_dict({key: value})
        assert key in str(error.value) and valid in str(error.value)


def test_module_does_not_import_diffusers():
    tree = ast.parse(pathlib.Path(S.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.split(".")[0] == "diffusers" for name in imported)


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_euler_ancestral_sample_prediction(steps, noise):
    """With prediction_type='sample' the model output is x0; the last step (sigma 0) lands on it."""
    target = torch.linspace(-1, 1, noise.numel()).reshape(noise.shape)
    cfg = CONFIGS["sample_clipped"]
    g = torch.Generator().manual_seed(1)
    out = S.sample_euler_ancestral(lambda x, t: target, noise, cfg, steps,
                                   noise_sampler=lambda x: torch.randn(x.shape, generator=g))
    torch.testing.assert_close(out, target, atol=1e-5, rtol=0)
