"""A ControlNet for the SD1.5 UNet (diffusers ``ControlNetModel`` keys), as MagicAnimate's DensePose
ControlNet is released.

Keys: ``conv_in``, ``time_embedding``, ``controlnet_cond_embedding`` (the same conv stack as the
PoseGuider: ``conv_in``, ``blocks.0-5``, ``conv_out``), ``down_blocks`` and ``mid_block`` (the UNet's
encoder half), ``controlnet_down_blocks.0-11`` and ``controlnet_mid_block`` (1x1 convs). It maps
latents, a timestep, text context and a control image to one residual per UNet skip connection
plus one for the mid block's output. Tensors are per frame: ``[frames, C, H, W]``.
"""

import torch

from .pose_guider import PoseGuider
from .unet import AttentionState, Block, TimestepEmbedding, UNetConfig, down_blocks, timestep_embedding


class ControlNet(torch.nn.Module):
    def __init__(self, cfg: UNetConfig, cond_channels=(16, 32, 96, 256), cond_in=3, *, bgr=False,
                 dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.config = cfg
        self.bgr = bgr
        kw = dict(dtype=dtype, device=device, operations=operations)
        ch = cfg.block_out_channels
        self.conv_in = operations.Conv2d(cfg.in_channels, ch[0], 3, padding=1, dtype=dtype, device=device)
        self.time_embedding = TimestepEmbedding(ch[0], ch[0] * 4, **kw)
        self.controlnet_cond_embedding = PoseGuider(cond_channels, ch[0], cond_in, **kw)

        def zero_conv(c):
            return operations.Conv2d(c, c, 1, dtype=dtype, device=device)

        self.down_blocks, index, skip_channels = down_blocks(cfg, **kw)
        self.controlnet_down_blocks = torch.nn.ModuleList(zero_conv(c) for c in skip_channels)
        self.mid_block = Block([ch[-1], ch[-1]], ch[-1], cfg, True, index, mid=True, **kw)
        self.controlnet_mid_block = zero_conv(ch[-1])

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, x, t, context, cond, scale=1.0):
        """``x`` ``[frames, 4, h, w]``, ``t`` a scalar timestep, ``context`` ``[frames, T, C]`` (or ``[1, T, C]``),
        ``cond`` ``[frames, 3, 8h, 8w]`` in [0, 1] (RGB). Returns ``(skip residuals, mid residual)``."""
        if self.bgr:
            cond = cond.flip(1)
        t = torch.as_tensor(t, device=x.device).reshape(1)
        temb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(x.dtype))
        h = self.conv_in(x) + self.controlnet_cond_embedding(cond)
        state = AttentionState()
        skips = [h]
        for block in self.down_blocks:
            h = block.forward_down(h, temb, context, state, skips)
        h = self.mid_block.forward_mid(h, temb, context, state)
        residuals = [conv(s) * scale for conv, s in zip(self.controlnet_down_blocks, skips, strict=True)]
        return residuals, self.controlnet_mid_block(h) * scale
