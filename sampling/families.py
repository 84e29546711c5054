"""The model families the engine runs, as data: where each one's code lives and its defaults.

A family module exposes ``build_window_model(models, **inputs)``, which returns a window model (see
:class:`~poseanimate.sampling.engine.WindowModel`), the starting noise and the keyword arguments of
:func:`~poseanimate.sampling.engine.run_sampler`, and ``animate(models, **inputs)``, which samples
them. The sampler loop and the windowed denoiser never look at the family.
"""

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str
    module: str
    scheduler: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    trained_length: int = 24
    steps: int = 20  # the command line's defaults
    cfg: float = 3.5


FAMILIES = {
    "moore": Family("moore", "animate_anyone", trained_length=24),
    "musepose": Family("musepose", "animate_anyone", trained_length=128),
    # configs/inference/inference.yaml + AnimationPipeline (steps_offset 1, clip_sample off; DDIM's defaults:
    # epsilon, leading spacing); 16-frame windows overlapping by 4, wrapping around, averaged equally.
    "magicanimate": Family(
        "magicanimate", "magicanimate",
        scheduler=dict(beta_schedule="linear", prediction_type="epsilon", rescale_betas_zero_snr=False,
                       timestep_spacing="leading", steps_offset=1, clip_sample=False),
        context=dict(length=16, overlap=4, schedule="looped", closed_loop=True, fuse="flat"), trained_length=24,
        steps=25, cfg=7.5),
    "unianimate": Family(
        "unianimate", "unianimate", trained_length=32,
        scheduler=dict(sampler="ddim", beta_schedule="scaled_linear", prediction_type="v_prediction",
                       rescale_betas_zero_snr=True, timestep_spacing="stride", steps_offset=1, set_alpha_to_one=False),
        context=dict(length=32, overlap=8, stride=1, schedule="static", fuse="flat"), steps=30, cfg=2.5),
}


def get_family(name):
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; valid families: {', '.join(FAMILIES)}") from None


def family_module(name):
    return importlib.import_module(f"{__package__}.{get_family(name).module}")


def scheduler_settings(name, scheduler=None):
    """The family's scheduler defaults with the caller's ``{"sampler": ..., **config}`` on top."""
    return {**get_family(name).scheduler, **dict(scheduler or {})}


def timestep_count(name, scheduler, steps):
    """How many timesteps the family's sampler runs for ``steps`` (``timestep_spacing="stride"``, UniAnimate's,
    runs one more)."""
    from .schedulers import timesteps

    settings = scheduler_settings(name, scheduler)
    sampler = settings.pop("sampler", "ddim")
    return len(timesteps(settings, steps, sampler))


def context_settings(name, context=None):
    """The family's context-window defaults with the caller's options on top (dict or ContextOptions)."""
    from .context import ContextOptions

    if isinstance(context, ContextOptions):
        return context
    return ContextOptions.from_dict({**get_family(name).context, **dict(context or {})})
