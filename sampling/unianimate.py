"""UniAnimate's engine: what goes into its video UNet, and its noise prior.

The reference (ali-vilab/UniAnimate, ``inference_unianimate_entrance.py`` / ``..._long_entrance.py``,
``DiffusionDDIM`` / ``DiffusionDDIMLong``), number for number:

* Conditional branch: the pose embedding of the window's driving poses (plus, with ``first_frame``,
  the reference image's embedding) as 8 extra input channels; a *reference frame* prepended to every
  window, made from the reference latent and the reference pose (zeros with ``first_frame``: the
  reference's ``local_image`` set has no ``randomref``); context = the empty prompt's text tokens
  (``zero_y``) + 4 tokens from the OpenCLIP image embedding.
* Unconditional branch: no pose, a zero reference frame, context = ``zero_y`` + 4 zero tokens.
* Guidance after fusion, ``uncond + cfg * (cond - uncond)``; long videos: fixed windows (32 frames
  overlapping by 8, the last one pinned to the end), each branch averaged per frame with equal
  weights, i.e. the shared denoiser with ``schedule="static"``, ``fuse="flat"``.
* DDIM on the ``linear_sd`` betas rescaled to zero terminal SNR, v-prediction, timesteps every
  ``1000 // steps`` from 1 (``timestep_spacing="stride"``: 6 steps run 7), the last step landing
  on ``alphas_cumprod[0]``.
* ``pose_temperature`` (not in the reference): TCAN's pose temperature map (sampling/temperature.py)
  in the temporal transformers of the input and output blocks, from each window's driving poses.
* Starting latents from a seed: ``randn`` plus 0.1 x per-frame offset noise, noised onto the
  reference latent at ``noise_prior_value``: 949 with the offset inside the prior when the video is
  one window (the short entrance), 939 with the offset added afterwards when it is longer (the long
  entrance).
"""

import logging

import torch

from ..models.unianimate import UniAnimateUNet
from .engine import make_noise, run_sampler
from .families import context_settings, get_family, scheduler_settings
from .schedulers import SchedulerConfig, alphas_cumprod
from .temperature import PoseTemperature, check_strength, grid_sizes

log = logging.getLogger(__name__)
FAMILY = "unianimate"

NOISE_PRIOR_SHORT = 949
NOISE_PRIOR_LONG = 939
OFFSET_NOISE = 0.1


def _image(x, name, shape):
    x = torch.as_tensor(x)
    if x.ndim != len(shape) or x.shape[-1] != 3 or any(s is not None and a != s for a, s in zip(x.shape, shape)):
        want = ", ".join("n" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must be [{want}] in [0, 1] (ComfyUI IMAGE layout), got {list(x.shape)}")
    return x


class UniAnimateWindowModel:
    """The WindowModel (sampling.engine): ``(x [n, L, 4, h, w], t, windows, branches)`` ->
    ``[len(branches), n, L, 4, h, w]``.

    Conditions that never change (reference frame, contexts) are computed once; pose embeddings per
    window (they attend over the window's frames), kept for the windows of the current and the previous
    step. Pose images stay in the form given (uint8 or float ``[F, H, W, 3]``, on the CPU is fine)."""

    def __init__(self, unet: UniAnimateUNet, *, reference_latents, image_embeds, text_embeds, reference_image,
                 reference_pose, pose_images, first_frame=False, pose_temperature=0.0, device=None, dtype=None):
        self.unet = unet
        self.device = torch.device(device) if device is not None else unet.time_embed[0].weight.device
        self.dtype = dtype or unet.dtype
        cfg = unet.config
        lat = torch.as_tensor(reference_latents)
        if lat.ndim != 4 or lat.shape[:2] != (1, cfg.reference_channels):
            raise ValueError(f"reference_latents must be [1, {cfg.reference_channels}, h, w] (VAE latent x 0.18215), "
                             f"got {list(lat.shape)}")
        h, w = lat.shape[-2:]
        size = (8 * h, 8 * w)
        self.pose_images = _image(pose_images, "pose_images", (None, *size, 3))
        reference_pose = _image(reference_pose, "reference_pose", (*size, 3))
        reference_image = _image(reference_image, "reference_image", (*size, 3)) if first_frame else None
        text = torch.as_tensor(text_embeds)
        if text.ndim != 3 or text.shape[0] != 1 or text.shape[2] != cfg.context_dim:
            raise ValueError(f"text_embeds must be [1, 77, {cfg.context_dim}] (the empty prompt's OpenCLIP text "
                             "tokens, "
                             f"penultimate layer + final layer norm), got {list(text.shape)}")
        image = torch.as_tensor(image_embeds)
        if image.ndim == 3 and image.shape[1] == 1:
            image = image[:, 0]
        if image.ndim != 2 or image.shape != (1, cfg.context_dim):
            raise ValueError(f"image_embeds must be [1, {cfg.context_dim}] or [1, 1, {cfg.context_dim}] (the OpenCLIP "
                             f"ViT-H image embedding), got {list(image.shape)}")
        kw = dict(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            text = text.to(**kw)
            tokens = unet.image_tokens(image.to(**kw))
            self.context = {"cond": torch.cat([text, tokens], 1),
                            "uncond": torch.cat([text, torch.zeros_like(tokens)], 1)}
            if first_frame:
                self.reference = torch.zeros(1, cfg.concat_dim + cfg.reference_channels, h, w, **kw)
                self.local_image = self._chw(reference_image[None])[0]
            else:
                self.reference = unet.embed_reference(lat.to(**kw), self._chw(reference_pose[None]))
                self.local_image = None
        self._local = {}
        self._poses, self._previous, self._t = {}, {}, None
        self.temperature = None
        if check_strength(pose_temperature):
            grids = grid_sizes(h, w, len(cfg.dim_mult))
            self.temperature = PoseTemperature(self.pose_images, pose_temperature, grids, self.device)

    def _chw(self, images):
        x = images.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return x.to(self.dtype).permute(0, 3, 1, 2)

    def _concat(self, window):
        key = tuple(window)
        feats = self._poses.get(key)
        if feats is None:
            feats = self._previous.get(key)
            if feats is None:
                feats = self.unet.embed_pose(self._chw(self.pose_images[list(window)]))
                if self.local_image is not None:
                    feats = feats + self._local_embedding(len(window))
            self._poses[key] = feats
        return feats

    def _local_embedding(self, length):
        if length not in self._local:
            self._local[length] = self.unet.embed_local_image(self.local_image, length)
        return self._local[length]

    @torch.inference_mode()
    def __call__(self, x, t, windows, branches):
        if self._t is None or not torch.equal(torch.as_tensor(t).cpu(), self._t):
            self._previous, self._poses, self._t = self._poses, {}, torch.as_tensor(t).cpu()
        n = x.shape[0]
        concat, reference, context = [], [], []
        for branch in branches:
            if branch == "cond":
                concat.append(torch.stack([self._concat(w) for w in windows]))
                reference.append(self.reference.expand(n, -1, -1, -1))
            else:
                concat.append(torch.zeros(n, x.shape[1], self.unet.config.concat_dim, *x.shape[-2:], device=x.device,
                                          dtype=self.dtype))
                reference.append(torch.zeros_like(self.reference).expand(n, -1, -1, -1))
            context.append(self.context[branch].expand(n, -1, -1))
        lat = torch.cat([x] * len(branches)).to(self.dtype)
        tau = None if self.temperature is None else self.temperature(windows, len(branches))
        out = self.unet(lat, t, torch.cat(context), torch.cat(concat), torch.cat(reference), tau)
        return out.float().reshape(len(branches), n, *out.shape[1:])


def noise_prior(noise_base, offset_noise, reference_latents, alphas_cumprod, *, long):
    """The reference entrances' starting latents ``[F, 4, h, w]`` from unit noise ``[F, 4, h, w]``,
    offset noise ``[F, 4, 1, 1]`` and the reference latent ``[1, 4, h, w]``."""
    if long:
        a = alphas_cumprod[NOISE_PRIOR_LONG]
        return a.sqrt() * reference_latents + (1 - a).sqrt() * noise_base + OFFSET_NOISE * offset_noise
    a = alphas_cumprod[NOISE_PRIOR_SHORT]
    return a.sqrt() * reference_latents + (1 - a).sqrt() * (noise_base + OFFSET_NOISE * offset_noise)


def starting_latents(shape, seed, reference_latents, *, context=None, scheduler=None):
    """Seeded starting latents ``[F, 4, h, w]`` with the reference's offset noise and noise prior
    (the long entrance's when the video is longer than one context window)."""
    opts = context_settings(FAMILY, context)
    sched = {k: v for k, v in scheduler_settings(FAMILY, scheduler).items() if k != "sampler"}
    base = make_noise(shape, seed, "cpu", opts)
    g = torch.Generator("cpu").manual_seed(int(seed) + 2)
    offset = torch.randn(shape[0], shape[1], 1, 1, generator=g)
    ref = torch.as_tensor(reference_latents).float().cpu()
    return noise_prior(base, offset, ref, alphas_cumprod(SchedulerConfig.from_dict(sched)), long=shape[0] > opts.length)


@torch.inference_mode()
def window_model(unet, *, reference_latents, image_embeds, text_embeds, reference_image, reference_pose, pose_images,
                 noise, first_frame=False, steps=30, cfg=2.5, scheduler=None, context=None, callback=None, seed=0,
                 device=None, dtype=None, pose_temperature=0.0):
    """The window model that denoises ``noise`` ``[F, 4, h, w]`` (the starting latents, used as given) with the
    UniAnimate UNet on ``device`` in ``dtype`` (default: the UNet's); see :func:`build_window_model` for the
    inputs. Returns ``(model, noise, run)``: ``run_sampler(model, noise, **run)`` samples."""
    opts = context_settings(FAMILY, context)
    frames = noise.shape[0]
    given = torch.as_tensor(pose_images).shape[0]
    if given < frames:
        raise ValueError(f"{frames} frames requested but only {given} pose images given")
    trained = get_family(FAMILY).trained_length
    if min(opts.length, frames) > trained:
        log.warning("PoseAnimate: context length %d is longer than the %d frames UniAnimate was trained on; "
                    "expect weaker motion. Use a context length of at most %d.", opts.length, trained, trained)
    device = torch.device(device) if device is not None else unet.time_embed[0].weight.device
    model = UniAnimateWindowModel(unet, reference_latents=reference_latents, image_embeds=image_embeds,
                                  text_embeds=text_embeds, reference_image=reference_image,
                                  reference_pose=reference_pose, pose_images=torch.as_tensor(pose_images)[:frames],
                                  first_frame=first_frame, pose_temperature=pose_temperature, device=device,
                                  dtype=dtype)
    return model, noise, dict(steps=steps, cfg=cfg, scheduler=scheduler_settings(FAMILY, scheduler), context=opts,
                              callback=callback, seed=seed, device=device)


def sample(unet, **inputs):
    """Denoise with :func:`window_model` (the same inputs); returns float32 latents ``[F, 4, h, w]`` on the CPU."""
    model, noise, run = window_model(unet, **inputs)
    return run_sampler(model, noise, **run)


def build_window_model(models, *, reference_latents, image_embeds, text_embeds, reference_image, reference_pose,
                       pose_images, first_frame=False, noise=None, seed=None, steps, cfg, context=None, callback=None,
                       scheduler=None, pose_temperature=0.0):
    """What :func:`animate` samples: ``(model, noise, run)``, as :func:`window_model` returns them.

    ``reference_latents`` ``[1, 4, h, w]`` (VAE latent x 0.18215); ``image_embeds`` ``[1, C]`` or ``[1, 1, C]``
    (OpenCLIP ViT-H-14 image embedding of the reference at 224x224); ``text_embeds`` ``[1, 77, C]`` (the
    empty prompt's OpenCLIP text tokens: penultimate layer, final layer norm); ``reference_image``,
    ``reference_pose`` ``[8h, 8w, 3]`` and ``pose_images`` ``[F, 8h, 8w, 3]`` in [0, 1] (or uint8).
    ``first_frame``: condition the first frame on the reference image instead of the reference frame.
    ``noise`` ``[F, 4, h, w]`` (or ``[1, 4, F, h, w]``): the starting latents as given; else drawn from
    ``seed`` with the reference's offset noise and noise prior. ``steps``: the reference's
    ``ddim_timesteps`` (6 runs 7 timesteps). ``context``: the family's default is the reference's long
    mode (32-frame static windows overlapping by 8, flat fusion); ``scheduler``: other samplers/settings;
    ``pose_temperature``: TCAN's pose temperature map (0 = off, 3 = TCAN's value).
    """
    lat = torch.as_tensor(reference_latents)
    poses = torch.as_tensor(pose_images)
    if lat.ndim != 4 or poses.ndim != 4:
        raise ValueError(f"reference_latents must be [1, 4, h, w] and pose_images [frames, 8h, 8w, 3]; got "
                         f"{list(lat.shape)} and {list(poses.shape)}")
    shape = (poses.shape[0], lat.shape[1], lat.shape[2], lat.shape[3])
    if noise is None:
        noise = starting_latents(shape, 0 if seed is None else seed, lat, context=context, scheduler=scheduler)
    else:
        noise = torch.as_tensor(noise)
        if noise.ndim == 5 and noise.shape[0] == 1:
            noise = noise[0].transpose(0, 1)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {list(shape)} (frames, 4, h, w), got {list(noise.shape)}")
    return window_model(models.unet, reference_latents=lat, image_embeds=image_embeds, text_embeds=text_embeds,
                        reference_image=reference_image, reference_pose=reference_pose, pose_images=poses, noise=noise,
                        first_frame=first_frame, steps=steps, cfg=cfg, scheduler=scheduler, context=context,
                        callback=callback, seed=0 if seed is None else seed, pose_temperature=pose_temperature)


def animate(models, **inputs):
    """Animate the reference with UniAnimate (the inputs of :func:`build_window_model`); returns latents
    ``[F, 4, h, w]`` (x 0.18215)."""
    model, noise, run = build_window_model(models, **inputs)
    return run_sampler(model, noise, **run)
