"""Does TCAN's pose temperature map do what TCAN claims? Measured on the attention itself.

    python benchmarks/ptm.py                # ../shared/fixtures/parity/ptm-shared (or $POSEANIMATE_FIXTURES)
    python benchmarks/ptm.py --fixture DIR --strength 3 --steps 4

The fixture's pose images must be drawn on black (ptm-shared's are; moore-tiny's have a grey,
noisy background, so no pixel is background and the map is 1 everywhere).

Runs the same animation (4 DDIM steps, cfg 3.5, windows of 8 overlapping by 4) with the map off and
on, and records every temporal self-attention of every motion module (all steps, windows, both
guidance branches, every head): the entropy of each pixel's attention over the window's frames,
divided by log(frames) (1 = uniform average over time, 0 = one frame only). Pixels are split into
*skeleton* (the pixel the map reads for that latent cell is drawn in at least one pose frame of
the video) and *background* (never drawn: tau > 1 in every window). TCAN's claim: the map leaves the
skeleton's attention as it is and
flattens the background's (towards an average over time: a steadier background). With random
networks there is no real background to look at, so the attention is the measurement; the
frame-to-frame change of the final latents on each class is reported too.
"""

import argparse
import json
import math
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(ROOT))

import poseanimate  # noqa: E402
from poseanimate.models import motion_module  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

FIXTURES = os.environ.get("POSEANIMATE_FIXTURES") or os.path.join(os.path.dirname(ROOT), "shared", "fixtures")
PTM_SHARED = os.path.join(FIXTURES, "parity", "ptm-shared")


def on_grid(skeleton, grid):
    """The skeleton mask read on a latent grid the way the map is (nearest)."""
    return F.interpolate(skeleton[None, None].float(), size=grid, mode="nearest")[0, 0] > 0


class EntropyRecorder:
    """Wraps the motion modules' temporal attention and sums each class's normalised entropy."""

    def __init__(self, skeleton, samples):
        self.skeleton = skeleton  # [H, W] bool at image resolution
        self.samples = samples
        self.masks = {}
        self.sums = {}
        self.plain = motion_module.temporal_attention

    def mask(self, pixels):
        if pixels not in self.masks:
            height, width = self.skeleton.shape
            scale = math.sqrt(height * width / pixels)
            grid = (round(height / scale), round(width / scale))
            self.masks[pixels] = (grid, on_grid(self.skeleton, grid).reshape(-1))
        return self.masks[pixels]

    def __call__(self, attn, x, temperature=None):
        q = attn.to_q(x) if temperature is None else attn.to_q(x) / temperature
        k = attn.to_k(x)
        rows, frames, dim = q.shape
        heads = attn.heads
        q = q.reshape(rows, frames, heads, -1).transpose(1, 2)
        k = k.reshape(rows, frames, heads, -1).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(dim=(1, 2)) / math.log(frames)
        (grid, drawn) = self.mask(rows // self.samples)
        drawn = drawn.repeat(self.samples)
        for name, sel in (("skeleton", drawn), ("background", ~drawn)):
            total, count = self.sums.get((grid, name), (0.0, 0))
            self.sums[grid, name] = (total + entropy[sel].sum().item(), count + int(sel.sum()))
        return self.plain(attn, x, temperature)


def steadiness(latents, skeleton):
    """Mean |x[f+1] - x[f]| of the final latents on the latent pixels of each class."""
    h, w = latents.shape[-2:]
    drawn = on_grid(skeleton, (h, w))
    change = (latents[1:] - latents[:-1]).abs().mean(dim=(0, 1))
    return {"skeleton": change[drawn].mean().item(), "background": change[~drawn].mean().item()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", default=PTM_SHARED, help="a parity fixture folder (networks, pose PNGs, tensors)")
    p.add_argument("--strength", type=float, default=3.0, help="pose_temperature when on (TCAN: 3)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cfg", type=float, default=3.5)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    meta = json.load(open(os.path.join(args.fixture, "meta.json")))
    tensors = load_file(os.path.join(args.fixture, "tensors.safetensors"))
    poses = np.stack([cv2.cvtColor(cv2.imread(os.path.join(args.fixture, f"pose_{i:03d}.png")), cv2.COLOR_BGR2RGB)
                      for i in range(meta["frames"])])
    skeleton = torch.from_numpy(np.any(poses != 0, axis=(0, 3)))
    models = poseanimate.load_models(args.fixture, device="cpu", dtype=torch.float32)
    context = dict(length=8, overlap=4, schedule="moore", fuse="flat")
    scheduler = dict(meta["scheduler"], sampler="ddim")
    results = {}
    for strength in (0.0, args.strength):
        recorder = EntropyRecorder(skeleton, 2 if args.cfg > 1 else 1)
        motion_module.temporal_attention = recorder
        try:
            latents = poseanimate.animate(
                models, reference_latents=tensors["ref_latents"], image_embeds=tensors["clip_image_embeds"],
                pose_images=torch.from_numpy(poses), noise=tensors["noise"], steps=args.steps, cfg=args.cfg,
                scheduler=scheduler, context=context, pose_temperature=strength)
        finally:
            motion_module.temporal_attention = recorder.plain
        results[strength] = (recorder.sums, steadiness(latents, skeleton))

    print(f"{meta['frames']} frames {poses.shape[2]}x{poses.shape[1]}, skeleton {skeleton.float().mean():.1%} of the "
          f"pixels, windows of 8, {args.steps} steps, cfg {args.cfg}; pose_temperature 0 vs {args.strength}")
    print("normalised entropy of each pixel's temporal attention (1 = uniform over the window's frames):")
    print(f"| grid | skeleton, off | skeleton, on | background, off | background, on |")
    print("| --- | --- | --- | --- | --- |")
    off, on = results[0.0][0], results[args.strength][0]
    for grid in sorted({g for g, _ in off}, key=lambda g: -g[0] * g[1]):
        cells = []
        for name in ("skeleton", "background"):
            for sums in (off, on):
                total, count = sums.get((grid, name), (0.0, 0))
                cells.append(f"{total / count:.3f}" if count else "-")
        print(f"| {grid[1]}x{grid[0]} | " + " | ".join(cells) + " |")
    print("frame-to-frame change of the final latents, mean |x[f+1] - x[f]|:")
    for name in ("skeleton", "background"):
        print(f"  {name}: off {results[0.0][1][name]:.4f}, on {results[args.strength][1][name]:.4f}")


if __name__ == "__main__":
    main()
