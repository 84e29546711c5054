"""The family-neutral engine: a windowed, guided denoiser over a family's window model, and the
sampler run around it.

A family (see :mod:`.families`) turns its networks and inputs into a :class:`WindowModel`; this
module owns the context windows, their fusion and classifier-free guidance, and hands the result
to a sampler from :mod:`.schedulers`. Neither knows which family it drives.
"""

import math
import numbers
from typing import Protocol, Sequence

import torch

from .context import ContextOptions, freenoise, window_weights, windows
from .families import family_module
from .schedulers import SchedulerConfig, get_sampler, timesteps

VAE_SCALE = 0.18215
GUIDED = ("uncond", "cond")
UNGUIDED = ("cond",)


class WindowModel(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, windows: Sequence[Sequence[int]],
                 branches: Sequence[str]) -> torch.Tensor:
        """``x`` float32 ``[n, L, C, h, w]``: the latents of ``n`` windows of ``L`` frames; ``windows``
        their frame indices in the video; ``branches`` :data:`GUIDED` or :data:`UNGUIDED`. Returns the
        network's output, float32 ``[len(branches), n, L, C, h, w]``."""


class WindowedDenoiser:
    """The model callable a sampler sees: ``(x [F, C, h, w], t) -> prediction [F, C, h, w]``.

    Each call evaluates the window model on every context window (``window_batch`` windows per
    call), fuses overlapping windows with their weights, then applies classifier-free guidance."""

    def __init__(self, model: WindowModel, *, cfg, opts: ContextOptions, steps, callback=None):
        self.model, self.cfg, self.opts, self.steps, self.callback = model, cfg, opts, steps, callback
        self.calls = 0

    @property
    def guided(self):
        return self.cfg > 1

    def __call__(self, x, t):
        step = self.calls
        self.calls += 1
        n = x.shape[0]
        wins = windows(n, self.opts, step, self.steps)
        branches = GUIDED if self.guided else UNGUIDED
        acc = torch.zeros((len(branches),) + tuple(x.shape), device=x.device, dtype=torch.float32)
        wsum = torch.zeros(n, device=x.device, dtype=torch.float32)
        batch = self.opts.window_batch
        for first in range(0, len(wins), batch):
            group = wins[first:first + batch]
            idx = torch.tensor(group, device=x.device)
            preds = self.model(x[idx.reshape(-1)].reshape(idx.shape + x.shape[1:]), t, group, branches)
            for k, window in enumerate(group):
                w = window_weights(window, n, self.opts).to(x.device)
                for b in range(len(branches)):
                    acc[b, idx[k]] = acc[b, idx[k]] + w[:, None, None, None] * preds[b, k]
                wsum[idx[k]] = wsum[idx[k]] + w
            if self.callback is not None:
                self.callback({"event": "window", "step": step, "steps": self.steps,
                               "window": min(first + batch, len(wins)), "windows": len(wins)})
        if self.guided or self.opts.schedule != "moore":
            acc = acc / wsum[None, :, None, None, None]
        # else: the reference pipeline sums overlapping windows without dividing when it skips
        # guidance; the `moore` schedule reproduces it.
        if not self.guided:
            return acc[0]
        uncond, cond = acc
        return uncond + self.cfg * (cond - uncond)


def check_sampling(*, steps, cfg, seed):
    """The sampling arguments every family's ``animate`` takes; ValueError naming the argument."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a whole number of at least 1, got {steps!r}")
    if isinstance(cfg, bool) or not isinstance(cfg, numbers.Real) or not math.isfinite(cfg):
        raise ValueError(f"cfg must be a finite number (the guidance scale; 1 or less: no guidance), got {cfg!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not -2**63 <= seed < 2**64):
        raise ValueError(f"seed must be a whole number from 0 to 2**64 - 1, got {seed!r}")


def check_finite(name, tensor):
    """``tensor`` as a tensor; ValueError when it holds NaN or infinite values."""
    t = torch.as_tensor(tensor)
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values; compute it again (a NaN usually comes from fp16 "
                         "overflow upstream: try fp32 or bf16)")
    return t


def check_images(name, images, tolerance=1e-3):
    """``images`` ``[F, H, W, 3]`` with at least one frame, uint8 (0-255) or float in [0, 1], as a tensor
    (not copied); ValueError otherwise."""
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be [frames, height, width, 3] (a ComfyUI IMAGE batch), got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} holds no frames; give at least one image")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ValueError(f"{name} must be uint8 (0-255) or floating point (0-1), got {images.dtype}")
    low, high = (v.item() for v in torch.aminmax(images.float() if images.dtype == torch.float16 else images))
    if math.isnan(low) or math.isnan(high) or not math.isfinite(low) or not math.isfinite(high):
        raise ValueError(f"{name} holds NaN or infinite values")
    if low < -tolerance or high > 1 + tolerance:
        raise ValueError(f"{name} has values from {low:g} to {high:g}; float images must lie in [0, 1] (divide "
                         "0-255 images by 255, or pass them as uint8)")
    return images


def make_noise(shape, seed, device, opts: ContextOptions | None = None):
    """Unit noise from a seed, drawn on the CPU so every device gets the same numbers."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(shape, generator=g)
    if opts is not None and opts.freenoise:
        noise = freenoise(noise, opts, g)
    return noise.to(device)


def starting_noise(noise, shape, seed, opts: ContextOptions):
    """The caller's ``noise`` (``[F, C, h, w]``, or the reference pipelines' ``[1, C, F, h, w]``) as
    ``[F, C, h, w]``, ValueError unless it is ``shape``; None: :func:`make_noise` from ``seed`` (None: 0)."""
    if noise is None:
        return make_noise(shape, 0 if seed is None else seed, "cpu", opts)
    noise = check_finite("noise", noise)
    if noise.ndim == 5 and noise.shape[0] == 1:
        noise = noise[0].transpose(0, 1)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must be {list(shape)} (frames, 4, h, w), got {list(noise.shape)}")
    return noise


@torch.inference_mode()
def run_sampler(model: WindowModel, noise, *, steps, cfg, scheduler: dict, context: ContextOptions, callback=None,
                seed=0, device=None):
    """Denoise ``noise`` ``[F, C, h, w]`` with ``model`` on ``device``; ``scheduler`` is
    ``{"sampler": name, **SchedulerConfig fields}``. Returns float32 latents on the CPU."""
    sched = dict(scheduler)
    name = sched.pop("sampler", "ddim")
    sampler = get_sampler(name)
    config = SchedulerConfig.from_dict(sched)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = device or noise.device
    runs = len(timesteps(config, steps, name))  # more than steps with timestep_spacing "stride"
    denoiser = WindowedDenoiser(model, cfg=cfg, opts=context, steps=runs, callback=callback)
    g = torch.Generator("cpu").manual_seed(int(seed) + 1)

    def noise_sampler(like):
        return torch.randn(like.shape, generator=g).to(device=like.device, dtype=like.dtype)

    def on_step(info):
        if callback is not None:
            callback({"event": "step", **info})

    x = sampler(denoiser, noise.to(device=device, dtype=torch.float32), config, steps,
                noise_sampler=noise_sampler, callback=on_step)
    return x.float().cpu()


def animate(models, **inputs):
    """Animate with any family's models (``models.family`` picks the family's ``animate``); see
    :func:`poseanimate.sampling.animate_anyone.animate` for Animate Anyone / MusePose's inputs."""
    return family_module(models.family).animate(models, **inputs)


_MOVED = ("ReferenceFeatures", "encode_reference", "encode_poses", "sample")


def __getattr__(name):
    # Animate Anyone's stages lived here before the engine took several families.
    if name in _MOVED:
        from . import animate_anyone

        return getattr(animate_anyone, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
