"""TCAN's pose-driven temperature map (PTM): steadier backgrounds from the motion modules.

TCAN (ECCV 2024) observed that the motion modules' temporal attention is sharp on the person and
diffuse on the background, and, at inference only, divides the temporal self-attention logits of
each pixel by a temperature that grows with the pixel's distance from the skeleton: background
pixels then average over the window's frames (steady), the person keeps its motion.

Per context window, from that window's pose images:

* background = the pixels that are exactly black in **every** frame of the window;
* ``d`` = ``cv2.distanceTransform(background, DIST_L2, 0)`` (exact Euclidean distance to the
  nearest drawn pixel) divided by ``sqrt((H/2)^2 + (W/2)^2)``;
* ``tau = 1 + strength * d`` (TCAN: strength 3), so tau is 1 on every stroke of the window;
* resized (nearest, ``F.interpolate``) to each motion-module level's latent grid.

Differences from TCAN's code, on purpose: TCAN resizes the map to a square ``int(sqrt(h*w))`` grid,
which is wrong (or fails) for non-square videos; here each level's real ``h x w`` grid is used
(identical on square videos). A window whose pose images are entirely black gets tau = 1 (TCAN's
distance transform returns 1.8e19 there, flattening every pixel's attention).

The map is applied by the motion modules (:mod:`..models.motion_module`) as a per-pixel scaling of
the queries, which keeps the fused attention kernel; a family's window model hands it to the UNet
through ``AttentionState.temperature`` (see :class:`PoseTemperature`).
"""

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _as_numpy(pose_images):
    if isinstance(pose_images, torch.Tensor):
        return pose_images.detach().cpu().numpy()
    return np.asarray(pose_images)


def _check(pose_images):
    if pose_images.ndim != 4 or pose_images.shape[-1] != 3:
        raise ValueError(f"pose temperature: pose images must be [frames, height, width, 3], got "
                         f"{list(pose_images.shape)}")


def check_strength(strength):
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"pose_temperature must be a number >= 0 (0 = off, TCAN uses 3), got {strength!r}")
    return value


def temperature_map(pose_images, strength):
    """TCAN's map for one window: ``[H, W]`` float32 tau from that window's ``[F, H, W, 3]`` pose
    images (uint8 or float; a pixel is background when all three channels are 0 in every frame)."""
    poses = _as_numpy(pose_images)
    _check(poses)
    height, width = poses.shape[1:3]
    background = np.all(poses == 0, axis=(0, 3))
    if background.all():
        return torch.ones(height, width)
    dist = cv2.distanceTransform(background.astype(np.uint8), cv2.DIST_L2, 0)
    dist = dist / math.sqrt((height / 2) ** 2 + (width / 2) ** 2)
    return torch.from_numpy(np.float32(strength) * dist.astype(np.float32) + np.float32(1))


def resize_map(tau, grid):
    """``tau`` ``[..., H, W]`` resized (nearest, like TCAN) to ``grid`` ``(h, w)``."""
    lead = tau.shape[:-2]
    out = F.interpolate(tau.reshape(1, -1, *tau.shape[-2:]).float(), size=tuple(grid), mode="nearest")
    return out.reshape(*lead, *grid)


def grid_sizes(height, width, levels):
    """The latent grids ``(h, w)`` of a UNet's ``levels`` resolutions for ``height x width`` latents
    (each downsampler is a stride-2 3x3 convolution with padding 1: ``ceil(n / 2)``)."""
    grids = [(height, width)]
    for _ in range(levels - 1):
        h, w = grids[-1]
        grids.append(((h + 1) // 2, (w + 1) // 2))
    return grids


def window_temperature(pose_images, window, strength, grids):
    """The map of one context window at each grid: ``{(h, w): [h, w] float32}``.

    ``pose_images``: the whole video's ``[F, H, W, 3]`` pose images (uint8 or float, numpy or torch),
    ``window``: the window's frame indices, ``strength``: TCAN's 3, ``grids``: e.g. :func:`grid_sizes`."""
    index = list(window)
    frames = pose_images[index] if isinstance(pose_images, torch.Tensor) else np.asarray(pose_images)[index]
    tau = temperature_map(frames, strength)
    return {tuple(grid): resize_map(tau, grid) for grid in grids}


class PoseTemperature:
    """The map of every window of one video, computed once per window (poses do not change between
    steps) and batched for ``AttentionState.temperature``.

    ``pose_images`` ``[F, H, W, 3]`` (kept as given; uint8 on the CPU is the smallest form),
    ``grids``: the motion-module grids of the UNet (:func:`grid_sizes`), ``device``: where the UNet
    runs."""

    def __init__(self, pose_images, strength, grids, device=None):
        self.pose_images = pose_images
        self.strength = check_strength(strength)
        self.grids = [tuple(g) for g in grids]
        self.device = device
        self.cache = {}
        _check(_as_numpy(pose_images[:1]))

    def window(self, window):
        key = tuple(int(i) for i in window)
        if key not in self.cache:
            maps = window_temperature(self.pose_images, key, self.strength, self.grids)
            self.cache[key] = {g: m.to(self.device) for g, m in maps.items()}
        return self.cache[key]

    def __call__(self, windows, branches=1):
        """``{(h, w): [branches * len(windows), h, w]}``, rows branch-major (the order of the
        UNet's samples: every window of the first branch, then of the next)."""
        maps = [self.window(w) for w in windows]
        return {g: torch.stack([m[g] for m in maps]).repeat(branches, 1, 1) for g in self.grids}
