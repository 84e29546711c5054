"""Animate Anyone and MusePose (families ``moore``, ``musepose``): ReferenceNet once, PoseGuider per
window, the denoising UNet with motion modules as the window model.

The stages are separate functions so ComfyUI nodes can run them as separate nodes:
:func:`encode_reference` -> (pose images) -> :func:`sample`; :func:`animate` runs them all.
"""

import logging
from dataclasses import dataclass

import torch

from ..models.unet import AttentionState
from .engine import GUIDED, check_finite, check_images, check_sampling, run_sampler, starting_noise
from .families import context_settings, get_family, scheduler_settings
from .temperature import PoseTemperature, check_strength, grid_sizes

log = logging.getLogger(__name__)
POSE_CHUNK = 4


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


def check_pose_images(pose_images):
    """``pose_images`` as a ``[F, H, W, 3]`` tensor (uint8 0-255 or float 0-1), not copied."""
    images = check_images("pose_images", pose_images)
    if images.shape[1] % 8 or images.shape[2] % 8:
        raise ValueError(f"pose image size {images.shape[2]}x{images.shape[1]} is not a multiple of 8; "
                         "resize the pose images to the video size (a multiple of 8)")
    return images


def pose_input(images, device, dtype):
    """Pose images (uint8 or float in [0, 1], ``[F, H, W, 3]``) as the PoseGuider's ``[F, 3, H, W]`` input."""
    x = images.to(device)
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    return x.to(dtype).permute(0, 3, 1, 2)


@torch.inference_mode()
def encode_poses(pose_guider, pose_images, *, chunk=16, device=None, dtype=None, out_device=None):
    """PoseGuider features for ``[F, H, W, 3]`` pose images (float in [0, 1] or uint8), ``chunk`` frames
    at a time, computed on ``device`` in ``dtype`` (default: the guider's weights'). Returns
    ``[F, C, H/8, W/8]`` on ``out_device`` (default: ``device``). :func:`sample` does not need them
    precomputed: given the images it runs the PoseGuider per window."""
    images = check_pose_images(pose_images)
    device = device or pose_guider.conv_in.weight.device
    dtype = dtype or pose_guider.dtype
    out_device = out_device or device
    out = [pose_guider(pose_input(images[i:i + chunk], device, dtype)).to(out_device)
           for i in range(0, images.shape[0], chunk)]
    if not out:
        raise ValueError("pose_images is empty: give at least one pose frame")
    return torch.cat(out)


class AnimateAnyoneModel:
    """The window model: the denoising UNet reading the reference and the poses of each window.

    ``pose`` is either PoseGuider features ``[F, C, h, w]`` or, with ``pose_guider`` given, the pose
    images ``[F, H, W, 3]`` (kept where they are, uint8 or float), encoded per window. ``temperature``:
    TCAN's pose temperature map of the video (:class:`~.temperature.PoseTemperature`) or None."""

    def __init__(self, unet, reference: ReferenceFeatures, pose, *, pose_guider=None, temperature=None, device,
                 dtype):
        self.unet, self.pose, self.pose_guider, self.temperature = unet, pose, pose_guider, temperature
        self.device, self.dtype = device, dtype
        tokens = {i: t.to(device) for i, t in reference.tokens.items()}
        self.ref_kv = unet.reference_keys_values(tokens, dtype)
        self.embeds = reference.image_embeds.to(device=device, dtype=dtype)

    def pose_features(self, idx):
        if self.pose_guider is None:
            return self.pose[idx.to(self.pose.device)].to(device=self.device, dtype=self.dtype)
        images = self.pose[idx.to(self.pose.device)]
        # A few frames at a time: the PoseGuider's first layers work at full image resolution.
        return torch.cat([self.pose_guider(pose_input(images[i:i + POSE_CHUNK], self.device, self.dtype))
                          for i in range(0, images.shape[0], POSE_CHUNK)])

    def __call__(self, x, t, windows, branches):
        n, length = x.shape[:2]
        idx = torch.tensor(windows).reshape(-1)
        lat = x.reshape(n * length, *x.shape[2:]).to(self.dtype)
        pose = self.pose_features(idx)
        context = self.embeds[:, None, :].expand(lat.shape[0], 1, -1)
        plain = 0
        if tuple(branches) == GUIDED:
            lat, pose = torch.cat([lat, lat]), torch.cat([pose, pose])
            context = torch.cat([torch.zeros_like(context), context])
            plain = n
        tau = None if self.temperature is None else self.temperature(windows, len(branches))
        state = AttentionState(frames=length, reference=self.ref_kv, plain_rows=plain, temperature=tau)
        out = self.unet(lat, t, context, state, pose=pose).float()
        return out.reshape(len(branches), n, length, *out.shape[1:])


@torch.inference_mode()
def window_model(unet, *, reference: ReferenceFeatures, noise, pose_features=None, pose_images=None, pose_guider=None,
                 steps=20, cfg=3.5, scheduler=None, context=None, callback=None, seed=0, trained_length=None,
                 family="moore", pose_temperature=0.0, device=None, dtype=None):
    """The window model that denoises ``noise`` ``[F, 4, h, w]`` into latents (scaled like the reference
    latents), computing on ``device`` in ``dtype`` (default: the UNet's weights'). The poses are
    ``pose_features`` ``[F, C, h, w]`` or ``pose_images`` ``[F, 8h, 8w, 3]`` with their ``pose_guider``
    (encoded per window). ``pose_temperature``: strength of TCAN's pose temperature map (0 = off, TCAN: 3;
    needs ``pose_images``). Returns ``(model, noise, run)``: ``run_sampler(model, noise, **run)`` samples."""
    check_strength(pose_temperature)
    if pose_temperature and pose_images is None:
        raise ValueError("pose_temperature needs the pose images: give pose_images (with their pose_guider) "
                         "instead of pose_features, or set pose_temperature to 0")
    opts = context_settings(family, context)
    frames = noise.shape[0]
    if (pose_features is None) == (pose_images is None) or (pose_images is not None and pose_guider is None):
        raise ValueError("give either pose_features, or pose_images with their pose_guider")
    if pose_images is not None:
        pose_images = check_pose_images(pose_images)
        pose, size = pose_images, tuple(s // 8 for s in pose_images.shape[1:3])
    else:
        pose, size = pose_features, tuple(pose_features.shape[-2:])
    if pose.shape[0] < frames:
        raise ValueError(f"{frames} frames requested but only {pose.shape[0]} pose frames given")
    if size != tuple(noise.shape[-2:]):
        raise ValueError(f"the poses are {size} latents but the video is {tuple(noise.shape[-2:])}: "
                         "the pose images must be 8x the latent size")
    window = min(opts.length, frames)
    trained_length = trained_length or get_family(family).trained_length
    if window > trained_length:
        log.warning("PoseAnimate: context length %d is longer than the %d frames the motion modules were "
                    "trained on; expect weaker motion. Use a context length of at most %d.",
                    window, trained_length, trained_length)
    device = device or unet.conv_in.weight.device
    temperature = None
    if pose_temperature:
        grids = grid_sizes(*noise.shape[-2:], len(unet.config.block_out_channels))
        temperature = PoseTemperature(pose[:frames], pose_temperature, grids, device)
    model = AnimateAnyoneModel(unet, reference, pose[:frames], pose_guider=pose_guider, temperature=temperature,
                               device=device, dtype=dtype or unet.dtype)
    return model, noise, dict(steps=steps, cfg=cfg, scheduler=scheduler_settings(family, scheduler), context=opts,
                              callback=callback, seed=seed, device=device)


def sample(unet, **inputs):
    """Denoise with :func:`window_model` (the same inputs); returns float32 latents on the CPU."""
    model, noise, run = window_model(unet, **inputs)
    return run_sampler(model, noise, **run)


def build_window_model(models, *, reference_latents, image_embeds, pose_images, noise=None, seed=None, steps=20,
                       cfg=3.5, scheduler=None, context=None, callback=None, pose_temperature=0.0):
    """What :func:`animate` samples: ``(model, noise, run)``, as :func:`window_model` returns them.

    ``reference_latents`` ``[1, 4, h, w]`` (VAE latents x 0.18215), ``image_embeds`` ``[1, C]`` (CLIP
    ``image_embeds``), ``pose_images`` ``[F, 8h, 8w, 3]`` in [0, 1] (or uint8), ``noise`` ``[F, 4, h, w]``
    or a ``seed``. ``scheduler``: ``{"sampler": name, **diffusers scheduler arguments}``; ``context``: see
    :class:`~poseanimate.sampling.context.ContextOptions`; ``callback(event: dict)``; ``pose_temperature``:
    TCAN's pose temperature map, steadier backgrounds (0 = off, TCAN: 3; see :mod:`.temperature`).
    """
    check_strength(pose_temperature)
    check_sampling(steps=steps, cfg=cfg, seed=seed)
    lat = check_finite("reference_latents", reference_latents)
    image_embeds = check_finite("image_embeds", image_embeds)
    poses = check_pose_images(pose_images)
    frames = poses.shape[0]
    if lat.ndim != 4:
        raise ValueError(f"reference_latents must be [1, 4, h, w], got {list(lat.shape)}")
    if tuple(poses.shape[1:3]) != (lat.shape[2] * 8, lat.shape[3] * 8):
        raise ValueError(f"pose_images must be [frames, {lat.shape[2] * 8}, {lat.shape[3] * 8}, 3] to match "
                         f"reference_latents {list(lat.shape)}, got {list(poses.shape)}")
    opts = context_settings(models.family, context)
    shape = (frames, lat.shape[1], lat.shape[2], lat.shape[3])
    noise = starting_noise(noise, shape, seed, opts)
    reference = encode_reference(models.reference_net, lat, image_embeds)
    return window_model(models.denoising_unet, reference=reference, pose_images=poses, pose_guider=models.pose_guider,
                        noise=noise, steps=steps, cfg=cfg, scheduler=scheduler, context=opts, callback=callback,
                        seed=0 if seed is None else seed, trained_length=models.trained_length, family=models.family,
                        pose_temperature=pose_temperature)


def animate(models, **inputs):
    """Animate the reference with the pose images (the inputs of :func:`build_window_model`); returns
    latents ``[F, 4, h, w]`` (x 0.18215)."""
    model, noise, run = build_window_model(models, **inputs)
    return run_sampler(model, noise, **run)
