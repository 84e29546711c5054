"""MagicAnimate as a family of the engine: the window model and ``animate``.

What the reference pipeline (magic-animate ``AnimationPipeline``) does, and this model with it:

* The appearance encoder runs once per step, at the step's timestep, on the clean reference latents
  with the text context; each transformer block of its mid and up blocks records its self-attention
  input (``fusion_blocks="midup"``). The reference hands the records over in float16; so do we.
* The denoising UNet's mid/up transformer blocks attend over concat(own tokens, reference tokens) in
  the conditional branch; the unconditional branch and the down blocks use plain self-attention.
  Both branches get the same text context (the empty prompt).
* The ControlNet turns each frame's DensePose image (with that frame's latent, the timestep and the
  text context) into residuals for the UNet's skip connections and mid block; both guidance branches
  get the same residuals. It is per frame, so it runs on a window's frames (frames shared with the
  previous call are reused).
* GroupNorm in the UNet's resnets and output pools its statistics over a window's frames.

Without guidance (cfg <= 1; the reference cannot run that) only the conditional branch is evaluated:
every row reads the reference features.
"""

import logging
from dataclasses import replace

import torch

from ..models.unet import AttentionState
from .animate_anyone import check_pose_images, pose_input
from .engine import VAE_SCALE, check_finite, check_sampling, run_sampler, starting_noise
from .families import context_settings, get_family, scheduler_settings
from .temperature import PoseTemperature, check_strength, grid_sizes

log = logging.getLogger(__name__)


def _min_rows(net, h, w):
    """2 when the network's deepest map is 1x1 (torch's GroupNorm refuses one value per group; a copy of the
    row is computed alongside), else 1."""
    for _ in net.config.block_out_channels[1:]:
        h, w = (h + 1) // 2, (w + 1) // 2
    return 2 if h * w == 1 else 1


def _midup(unet):
    """Indices of the transformer blocks in the mid and up blocks (the ones that read the reference)."""
    inside = {id(m) for part in (unet.mid_block, unet.up_blocks) for m in part.modules()}
    return {b.index for b in unet.transformer_blocks() if id(b) in inside}


class MagicAnimateModel:
    """The window model (see :mod:`.engine`): ``(x [n, L, 4, h, w], t, windows, branches) ->
    [len(branches), n, L, 4, h, w]`` epsilon predictions."""

    def __init__(self, networks, reference_latents, text_embeds, pose_images, *, temperature=None, device=None,
                 dtype=None, control_chunk=16):
        self.encoder, self.unet = networks.appearance_encoder, networks.denoising_unet
        self.controlnet = networks.controlnet
        self.device = device or self.unet.conv_in.weight.device
        self.dtype = dtype or self.unet.dtype
        self.reference = torch.as_tensor(reference_latents).to(device=self.device, dtype=self.dtype)
        self.text = torch.as_tensor(text_embeds).to(device=self.device, dtype=self.dtype)
        self.poses, self.temperature = pose_images, temperature
        self.control_chunk = control_chunk
        self.readers = _midup(self.unet)
        self._t = None
        self.ref_kv = None
        self.control = {}

    def _step(self, t):
        """Per step: the appearance encoder at ``t``; the ControlNet cache starts over."""
        rows = _min_rows(self.encoder, *self.reference.shape[-2:])
        state = AttentionState(capture={})
        self.encoder(self.reference.expand(rows, -1, -1, -1), t, self.text.expand(rows, -1, -1), state)
        self.ref_kv = []
        for block in self.unet.transformer_blocks():
            if block.index not in self.readers:
                self.ref_kv.append(None)
                continue
            tokens = state.capture[block.index][:1].to(torch.float16).to(self.dtype)
            self.ref_kv.append((block.attn1.to_k(tokens), block.attn1.to_v(tokens)))
        self.control = {}
        self._t = float(t)

    def _control(self, latents, t, frames):
        """ControlNet residuals of ``frames`` (``latents``: frame -> latent), one per frame, reusing the last call's."""
        cache = {f: self.control[f] for f in frames if f in self.control and torch.equal(self.control[f][0], latents[f])}
        todo = [f for f in dict.fromkeys(frames) if f not in cache]
        for first in range(0, len(todo), self.control_chunk):
            chunk = todo[first:first + self.control_chunk]
            rows = chunk * _min_rows(self.controlnet, *latents[chunk[0]].shape[-2:]) if len(chunk) == 1 else chunk
            cond = pose_input(self.poses[torch.tensor(rows)], self.device, self.dtype)
            lat = torch.stack([latents[f] for f in rows]).to(self.dtype)
            skips, mid = self.controlnet(lat, t, self.text.expand(len(rows), -1, -1), cond)
            for j, f in enumerate(chunk):
                cache[f] = (latents[f], [s[j] for s in skips], mid[j])
        self.control = cache
        return cache

    def __call__(self, x, t, windows, branches):
        if self._t != float(t):
            self._step(t)
        n, length = x.shape[:2]
        frames = [f for window in windows for f in window]
        latents = {f: x[i, j] for i, window in enumerate(windows) for j, f in enumerate(window)}
        cache = self._control(latents, t, frames)
        rows = len(branches)
        skips = [torch.stack([cache[f][1][k] for f in frames]).repeat(rows, 1, 1, 1)
                 for k in range(len(cache[frames[0]][1]))]
        mid = torch.stack([cache[f][2] for f in frames]).repeat(rows, 1, 1, 1)
        lat = x.reshape(n * length, *x.shape[2:]).to(self.dtype).repeat(rows, 1, 1, 1)
        context = self.text.expand(lat.shape[0], -1, -1)
        plain = n if "uncond" in branches else 0
        tau = None if self.temperature is None else self.temperature(windows, rows)
        state = AttentionState(frames=length, reference=self.ref_kv, plain_rows=plain, residuals=(skips, mid),
                               temperature=tau)
        out = self.unet(lat, t, context, state).float()
        return out.reshape(rows, n, length, *out.shape[1:])


def check_inputs(reference_latents, text_embeds, pose_images, embed_dim):
    lat = torch.as_tensor(reference_latents)
    if lat.ndim != 4 or lat.shape[0] != 1 or lat.shape[1] != 4:
        raise ValueError(f"reference_latents must be [1, 4, h, w] (VAE latents x {VAE_SCALE}), got {list(lat.shape)}")
    text = torch.as_tensor(text_embeds)
    if text.ndim == 2:
        text = text[None]
    if text.ndim != 3 or text.shape[0] != 1 or text.shape[2] != embed_dim:
        raise ValueError(f"text_embeds must be [1, 77, {embed_dim}] (the SD1.5 text encoder's output for the empty "
                         f"prompt), got {list(text.shape)}")
    poses = check_pose_images(pose_images)
    size = (lat.shape[2] * 8, lat.shape[3] * 8)
    if tuple(poses.shape[1:3]) != size:
        raise ValueError(f"pose_images must be DensePose images [frames, {size[0]}, {size[1]}, 3] matching "
                         f"reference_latents {list(lat.shape)}, got {list(poses.shape)}")
    return lat, text, poses


@torch.inference_mode()
def window_model(networks, *, reference_latents, text_embeds, pose_images, noise, steps, cfg, scheduler=None,
                 context=None, pose_temperature=0.0, callback=None, seed=0, trained_length=None, device=None,
                 dtype=None):
    """The window model that denoises ``noise`` ``[F, 4, h, w]`` with ``networks`` (``appearance_encoder``,
    ``denoising_unet``, ``controlnet``) on ``device`` in ``dtype`` (default: the UNet's). Returns
    ``(model, noise, run)``: ``run_sampler(model, noise, **run)`` samples."""
    lat, text, poses = check_inputs(reference_latents, text_embeds, pose_images,
                                    networks.denoising_unet.config.cross_attention_dim)
    check_strength(pose_temperature)
    opts = context_settings("magicanimate", context)
    if cfg <= 1 and opts.schedule == "moore":
        # Moore's unguided pipeline sums overlapping windows; MagicAnimate's has no unguided path: average.
        opts = replace(opts, schedule="looped", closed_loop=opts.loops)
    frames = noise.shape[0]
    if poses.shape[0] < frames:
        raise ValueError(f"{frames} frames requested but only {poses.shape[0]} pose frames given")
    trained_length = trained_length or get_family("magicanimate").trained_length
    if min(opts.length, frames) > trained_length:
        log.warning("PoseAnimate: context length %d is longer than the %d frames MagicAnimate's motion modules "
                    "know; expect weaker motion. Use a context length of at most %d.",
                    min(opts.length, frames), trained_length, trained_length)
    device = device or networks.denoising_unet.conv_in.weight.device
    temperature = None
    if pose_temperature:
        grids = grid_sizes(*noise.shape[-2:], len(networks.denoising_unet.config.block_out_channels))
        temperature = PoseTemperature(poses[:frames], pose_temperature, grids, device)
    model = MagicAnimateModel(networks, lat, text, poses[:frames], temperature=temperature, device=device,
                              dtype=dtype or networks.denoising_unet.dtype)
    return model, noise, dict(steps=steps, cfg=cfg, scheduler=scheduler_settings("magicanimate", scheduler),
                              context=opts, callback=callback, seed=seed, device=device)


def sample(networks, **inputs):
    """Denoise with :func:`window_model` (the same inputs); returns float32 latents on the CPU."""
    model, noise, run = window_model(networks, **inputs)
    return run_sampler(model, noise, **run)


def build_window_model(models, *, reference_latents, text_embeds, pose_images, noise=None, seed=None, steps, cfg,
                       scheduler=None, context=None, pose_temperature=0.0, callback=None):
    """What :func:`animate` samples: ``(model, noise, run)``, as :func:`window_model` returns them.

    ``reference_latents`` ``[1, 4, h, w]`` (VAE latents x 0.18215); ``text_embeds`` ``[1, 77, C]``: the SD1.5 text
    encoder's output for the empty prompt (both guidance branches get it, as in the reference);
    ``pose_images`` ``[F, 8h, 8w, 3]`` DensePose renders in [0, 1] (or uint8); ``noise`` ``[F, 4, h, w]`` (or the
    reference's ``[1, 4, F, h, w]``) or a ``seed``. ``scheduler`` / ``context``: overrides of the family's
    defaults (the reference's DDIM and 16-frame windows); ``pose_temperature > 0``: TCAN's temperature map.
    """
    check_sampling(steps=steps, cfg=cfg, seed=seed)
    lat, text, poses = check_inputs(check_finite("reference_latents", reference_latents),
                                    check_finite("text_embeds", text_embeds), pose_images, models.embed_dim)
    opts = context_settings(models.family, context)
    shape = (poses.shape[0], 4, lat.shape[2], lat.shape[3])
    noise = starting_noise(noise, shape, seed, opts)
    return window_model(models, reference_latents=lat, text_embeds=text, pose_images=poses, noise=noise, steps=steps,
                        cfg=cfg, scheduler=scheduler, context=opts, pose_temperature=pose_temperature,
                        callback=callback, seed=0 if seed is None else seed, trained_length=models.trained_length)


def animate(models, **inputs):
    """Animate the reference with DensePose images (the inputs of :func:`build_window_model`); returns
    latents ``[F, 4, h, w]`` (x 0.18215)."""
    model, noise, run = build_window_model(models, **inputs)
    return run_sampler(model, noise, **run)
