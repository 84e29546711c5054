"""Animate Anyone's PoseGuider: pose image -> latent-resolution features added after ``conv_in``.

Keys ``conv_in``, ``blocks.0-5`` (pairs of a stride-1 and a stride-2 3x3 conv), ``conv_out``;
the widths (16, 32, 96, 256 -> 320 in the released files) come from the state dict.
"""

import torch
import torch.nn.functional as F


class PoseGuider(torch.nn.Module):
    def __init__(self, channels=(16, 32, 96, 256), out_channels=320, in_channels=3, *,
                 dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.conv_in = operations.Conv2d(in_channels, channels[0], 3, padding=1, **kw)
        self.blocks = torch.nn.ModuleList()
        for cin, cout in zip(channels[:-1], channels[1:]):
            self.blocks.append(operations.Conv2d(cin, cin, 3, padding=1, **kw))
            self.blocks.append(operations.Conv2d(cin, cout, 3, padding=1, stride=2, **kw))
        self.conv_out = operations.Conv2d(channels[-1], out_channels, 3, padding=1, **kw)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, x):
        """``x`` ``[frames, 3, H, W]`` in [0, 1] -> ``[frames, out_channels, H/8, W/8]``."""
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
