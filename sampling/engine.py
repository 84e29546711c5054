"""The animation engine: ReferenceNet once, PoseGuider in chunks, then a sampler over a windowed,
guided denoiser.

The stages are separate functions so ComfyUI nodes can run them as separate nodes:
:func:`encode_reference` -> :func:`encode_poses` -> :func:`sample`; :func:`animate` runs all three.
"""

import logging
from dataclasses import dataclass

import torch

from ..models.unet import AttentionState
from .context import ContextOptions, freenoise, window_weights, windows
from .schedulers import SchedulerConfig, get_sampler

log = logging.getLogger(__name__)

VAE_SCALE = 0.18215


@dataclass
class ReferenceFeatures:
    """The ReferenceNet's self-attention inputs for one reference image, per transformer block."""

    tokens: dict
    image_embeds: torch.Tensor


def _embeds(image_embeds, dim, device, dtype):
    e = torch.as_tensor(image_embeds)
    if e.ndim == 3 and e.shape[1] == 1:
        e = e[:, 0]
    if e.ndim != 2 or e.shape[0] != 1 or e.shape[1] != dim:
        raise ValueError(f"image_embeds must be [1, {dim}] (CLIP vision image_embeds of the reference image), "
                         f"got {list(e.shape)}")
    return e.to(device=device, dtype=dtype)[:, None, :]


@torch.inference_mode()
def encode_reference(reference_net, reference_latents, image_embeds, *, device=None, dtype=None):
    """Run the ReferenceNet once at timestep 0 on ``[1, 4, h, w]`` latents (already scaled by
    0.18215), conditioned on the image embedding, and keep each block's self-attention input.
    ``device``/``dtype``: where and in what to compute (default: the network's weights')."""
    lat = torch.as_tensor(reference_latents)
    if lat.ndim != 4 or lat.shape[0] != 1 or lat.shape[1] != reference_net.config.in_channels:
        raise ValueError(f"reference_latents must be [1, {reference_net.config.in_channels}, h, w], got {list(lat.shape)}")
    device = device or reference_net.conv_in.weight.device
    dtype = dtype or reference_net.dtype
    context = _embeds(image_embeds, reference_net.config.cross_attention_dim, device, dtype)
    lat = lat.to(device=device, dtype=dtype)
    h, w = lat.shape[-2:]
    for _ in reference_net.config.block_out_channels[1:]:
        h, w = (h + 1) // 2, (w + 1) // 2
    rows = 2 if h * w == 1 else 1  # torch's GroupNorm refuses one value per group; the copy is identical
    state = AttentionState(frames=1, capture={})
    reference_net(lat.expand(rows, -1, -1, -1), 0, context.expand(rows, -1, -1), state)
    tokens = {i: t[:1] for i, t in state.capture.items()}
    return ReferenceFeatures(tokens=tokens, image_embeds=context[:, 0])


@torch.inference_mode()
def encode_poses(pose_guider, pose_images, *, chunk=16, device=None, dtype=None, out_device=None):
    """PoseGuider features for ``[F, H, W, 3]`` pose images in [0, 1], ``chunk`` frames at a time,
    computed on ``device`` in ``dtype`` (default: the guider's weights'). Returns ``[F, C, H/8, W/8]``
    on ``out_device`` (default: ``device``)."""
    images = torch.as_tensor(pose_images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"pose_images must be [frames, height, width, 3] (a ComfyUI IMAGE batch), got {list(images.shape)}")
    if images.shape[1] % 8 or images.shape[2] % 8:
        raise ValueError(f"pose image size {images.shape[2]}x{images.shape[1]} is not a multiple of 8; "
                         "resize the pose images to the video size (a multiple of 8)")
    device = device or pose_guider.conv_in.weight.device
    dtype = dtype or pose_guider.dtype
    out_device = out_device or device
    out = []
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(device=device, dtype=dtype).permute(0, 3, 1, 2)
        out.append(pose_guider(x).to(out_device))
    return torch.cat(out)


class WindowedDenoiser:
    """The model callable a sampler sees: ``(x [F,4,h,w], t) -> prediction [F,4,h,w]``.

    Each call evaluates the UNet on every context window (``window_batch`` windows per pass),
    fuses overlapping windows with their weights, then applies classifier-free guidance."""

    def __init__(self, unet, reference: ReferenceFeatures, pose, cfg, opts: ContextOptions, steps, callback=None,
                 *, device=None, dtype=None):
        self.unet, self.pose, self.cfg, self.opts, self.steps = unet, pose, cfg, opts, steps
        self.callback = callback
        self.device = device or unet.conv_in.weight.device
        self.dtype = dtype or unet.dtype
        tokens = {i: t.to(self.device) for i, t in reference.tokens.items()}
        self.ref_kv = unet.reference_keys_values(tokens, self.dtype)
        self.embeds = reference.image_embeds.to(device=self.device, dtype=self.dtype)
        self.calls = 0

    @property
    def guided(self):
        return self.cfg > 1

    def __call__(self, x, t):
        step = self.calls
        self.calls += 1
        n = x.shape[0]
        wins = windows(n, self.opts, step, self.steps)
        guided = self.guided
        acc = torch.zeros((2 if guided else 1,) + tuple(x.shape), device=x.device, dtype=torch.float32)
        wsum = torch.zeros(n, device=x.device, dtype=torch.float32)
        batch = self.opts.window_batch
        for first in range(0, len(wins), batch):
            group = wins[first:first + batch]
            preds = self._evaluate(x, t, group)
            for k, window in enumerate(group):
                idx = torch.tensor(window, device=x.device)
                w = window_weights(window, n, self.opts).to(x.device)
                for branch in range(acc.shape[0]):
                    acc[branch, idx] = acc[branch, idx] + w[:, None, None, None] * preds[branch, k]
                wsum[idx] = wsum[idx] + w
            if self.callback is not None:
                self.callback({"event": "window", "step": step, "steps": self.steps,
                               "window": min(first + batch, len(wins)), "windows": len(wins)})
        if guided or self.opts.schedule != "moore":
            acc = acc / wsum[None, :, None, None, None]
        # else: the reference pipeline sums overlapping windows without dividing when it skips
        # guidance; the `moore` schedule reproduces it.
        if not guided:
            return acc[0]
        uncond, cond = acc
        return uncond + self.cfg * (cond - uncond)

    def _evaluate(self, x, t, group):
        """UNet outputs ``[branches, len(group), L, 4, h, w]`` (branch 0 unconditional when guided)."""
        unet, dtype = self.unet, self.dtype
        length = len(group[0])
        idx = torch.tensor(group, device=x.device).reshape(-1)
        lat = x[idx].to(dtype)
        pose = self.pose[idx.to(self.pose.device)].to(device=x.device, dtype=dtype)
        context = self.embeds[:, None, :].expand(lat.shape[0], 1, -1)
        plain = 0
        if self.guided:
            lat, pose = torch.cat([lat, lat]), torch.cat([pose, pose])
            context = torch.cat([torch.zeros_like(context), context])
            plain = len(group)
        state = AttentionState(frames=length, reference=self.ref_kv, plain_rows=plain)
        out = unet(lat, t, context, state, pose=pose).float()
        return out.reshape(-1, len(group), length, *out.shape[1:])


def make_noise(shape, seed, device, opts: ContextOptions | None = None):
    """Unit noise from a seed, drawn on the CPU so every device gets the same numbers."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(shape, generator=g)
    if opts is not None and opts.freenoise:
        noise = freenoise(noise, opts, g)
    return noise.to(device)


@torch.inference_mode()
def sample(unet, *, reference: ReferenceFeatures, pose_features, noise, steps=20, cfg=3.5, scheduler=None,
           context=None, callback=None, seed=0, trained_length=None, device=None, dtype=None):
    """Denoise ``noise`` ``[F, 4, h, w]`` into latents (scaled like the reference latents), computing
    on ``device`` in ``dtype`` (default: the UNet's weights'). Returns float32 latents on the CPU."""
    sched = dict(scheduler or {})
    sampler_name = sched.pop("sampler", "ddim")
    config = SchedulerConfig.from_dict(sched)
    sampler = get_sampler(sampler_name)
    opts = ContextOptions.from_dict(context)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    frames = noise.shape[0]
    if pose_features.shape[0] < frames:
        raise ValueError(f"{frames} frames requested but only {pose_features.shape[0]} pose frames given")
    if pose_features.shape[-2:] != noise.shape[-2:]:
        raise ValueError(f"pose features are {tuple(pose_features.shape[-2:])} latents but the video is "
                         f"{tuple(noise.shape[-2:])}: the pose images must be 8x the latent size")
    window = min(opts.length, frames)
    if trained_length and window > trained_length:
        log.warning("PoseAnimate: context length %d is longer than the %d frames the motion modules were "
                    "trained on; expect weaker motion. Use a context length of at most %d.",
                    window, trained_length, trained_length)
    device = device or unet.conv_in.weight.device
    denoiser = WindowedDenoiser(unet, reference, pose_features[:frames], cfg, opts, steps, callback,
                                device=device, dtype=dtype)
    g = torch.Generator("cpu").manual_seed(int(seed) + 1)

    def noise_sampler(like):
        return torch.randn(like.shape, generator=g).to(device=like.device, dtype=like.dtype)

    def on_step(info):
        if callback is not None:
            callback({"event": "step", **info})

    x = sampler(denoiser, noise.to(device=device, dtype=torch.float32), config, steps,
                noise_sampler=noise_sampler, callback=on_step)
    return x.float().cpu()


def animate(models, *, reference_latents, image_embeds, pose_images, noise=None, seed=None, steps=20, cfg=3.5,
            scheduler=None, context=None, callback=None):
    """Animate the reference with the pose images; returns latents ``[F, 4, h, w]`` (x 0.18215).

    ``reference_latents`` ``[1, 4, h, w]`` (VAE latents x 0.18215), ``image_embeds`` ``[1, C]`` (CLIP
    ``image_embeds``), ``pose_images`` ``[F, 8h, 8w, 3]`` in [0, 1], ``noise`` ``[F, 4, h, w]`` or a ``seed``.
    ``scheduler``: ``{"sampler": name, **diffusers scheduler arguments}``; ``context``: see
    :class:`~poseanimate.sampling.context.ContextOptions`; ``callback(event: dict)``.
    """
    lat = torch.as_tensor(reference_latents)
    poses = torch.as_tensor(pose_images)
    frames = poses.shape[0]
    if lat.ndim != 4:
        raise ValueError(f"reference_latents must be [1, 4, h, w], got {list(lat.shape)}")
    if poses.ndim != 4 or tuple(poses.shape[1:3]) != (lat.shape[2] * 8, lat.shape[3] * 8):
        raise ValueError(f"pose_images must be [frames, {lat.shape[2] * 8}, {lat.shape[3] * 8}, 3] to match "
                         f"reference_latents {list(lat.shape)}, got {list(poses.shape)}")
    shape = (frames, lat.shape[1], lat.shape[2], lat.shape[3])
    if noise is None:
        noise = make_noise(shape, 0 if seed is None else seed, "cpu", ContextOptions.from_dict(context))
    else:
        noise = torch.as_tensor(noise)
        if noise.ndim == 5 and noise.shape[0] == 1:
            noise = noise[0].transpose(0, 1)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {list(shape)} (frames, 4, h, w), got {list(noise.shape)}")
    reference = encode_reference(models.reference_net, lat, image_embeds)
    pose = encode_poses(models.pose_guider, poses)
    return sample(models.denoising_unet, reference=reference, pose_features=pose, noise=noise, steps=steps, cfg=cfg,
                  scheduler=scheduler, context=context, callback=callback, seed=0 if seed is None else seed,
                  trained_length=models.trained_length)
