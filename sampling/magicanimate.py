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

import torch

from ..models.unet import AttentionState

VAE_SCALE = 0.18215


def _midup(unet):
    """Indices of the transformer blocks in the mid and up blocks (the ones that read the reference)."""
    inside = {id(m) for part in (unet.mid_block, unet.up_blocks) for m in part.modules()}
    return {b.index for b in unet.transformer_blocks() if id(b) in inside}


class MagicAnimateModel:
    """The window model (see :mod:`.engine`): ``(x [n, L, 4, h, w], t, windows, branches) ->
    [len(branches), n, L, 4, h, w]`` epsilon predictions."""

    def __init__(self, models, reference_latents, text_embeds, pose_images, *, device=None, dtype=None,
                 control_chunk=16):
        self.encoder, self.unet, self.controlnet = models.appearance_encoder, models.denoising_unet, models.controlnet
        self.device = device or self.unet.conv_in.weight.device
        self.dtype = dtype or self.unet.dtype
        self.reference = torch.as_tensor(reference_latents).to(device=self.device, dtype=self.dtype)
        self.text = torch.as_tensor(text_embeds).to(device=self.device, dtype=self.dtype)
        self.poses = pose_images
        self.control_chunk = control_chunk
        self.readers = _midup(self.unet)
        self._t = None
        self.ref_kv = None
        self.control = {}

    def _step(self, t):
        """Per step: the appearance encoder at ``t``; the ControlNet cache starts over."""
        h, w = self.reference.shape[-2:]
        for _ in self.encoder.config.block_out_channels[1:]:
            h, w = (h + 1) // 2, (w + 1) // 2
        rows = 2 if h * w == 1 else 1  # torch's GroupNorm refuses one value per group; the copy is identical
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
            idx = torch.tensor(chunk)
            cond = self.poses[idx].to(device=self.device, dtype=self.dtype).permute(0, 3, 1, 2)
            lat = torch.stack([latents[f] for f in chunk]).to(self.dtype)
            skips, mid = self.controlnet(lat, t, self.text.expand(len(chunk), -1, -1), cond)
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
        state = AttentionState(frames=length, reference=self.ref_kv, plain_rows=plain, residuals=(skips, mid))
        out = self.unet(lat, t, context, state).float()
        return out.reshape(rows, n, length, *out.shape[1:])


def check_inputs(reference_latents, text_embeds, pose_images, embed_dim):
    lat = torch.as_tensor(reference_latents)
    if lat.ndim != 4 or lat.shape[0] != 1 or lat.shape[1] != 4:
        raise ValueError(f"reference_latents must be [1, 4, h, w] (VAE latents x {VAE_SCALE}), got {list(lat.shape)}")
    text = torch.as_tensor(text_embeds)
    if text.ndim != 3 or text.shape[0] != 1 or text.shape[2] != embed_dim:
        raise ValueError(f"text_embeds must be [1, 77, {embed_dim}] (the SD1.5 text encoder's output for the empty "
                         f"prompt), got {list(text.shape)}")
    poses = torch.as_tensor(pose_images)
    size = [lat.shape[2] * 8, lat.shape[3] * 8]
    if poses.ndim != 4 or list(poses.shape[1:3]) != size or poses.shape[3] != 3:
        raise ValueError(f"pose_images must be DensePose images [frames, {size[0]}, {size[1]}, 3] in [0, 1] matching "
                         f"reference_latents {list(lat.shape)}, got {list(poses.shape)}")
    return lat, text, poses
