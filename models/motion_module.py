"""AnimateDiff v2 motion module (``VanillaTemporalModule``), as used by Animate Anyone and MusePose.

Keys follow the released files: ``temporal_transformer.{norm, proj_in, transformer_blocks.0.{
attention_blocks.{0,1}, norms.{0,1}, ff, ff_norm}, proj_out}``. The sinusoidal position encoding is
computed for the window length on the fly; a stored ``pos_encoder.pe`` is not needed (the loader
checks and drops it).
"""

import math
from functools import lru_cache

import torch

from .attention import Attention, FeedForward


@lru_cache(maxsize=32)
def _position_encoding_cpu(length, dim):
    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def position_encoding(length, dim, device, dtype):
    """Rows ``0..length-1`` of AnimateDiff's ``PositionalEncoding.pe`` (computed on the CPU in
    float32 like the reference, so every device sees the same values)."""
    return _position_encoding_cpu(length, dim).to(device=device, dtype=dtype)


class TemporalTransformerBlock(torch.nn.Module):
    def __init__(self, dim, heads, *, num_attention_blocks=2, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.attention_blocks = torch.nn.ModuleList(Attention(dim, heads, **kw) for _ in range(num_attention_blocks))
        self.norms = torch.nn.ModuleList(
            operations.LayerNorm(dim, dtype=dtype, device=device) for _ in range(num_attention_blocks))
        self.ff = FeedForward(dim, **kw)
        self.ff_norm = operations.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, x, temperature=None):
        # x: [batch * tokens, frames, dim]
        pe = position_encoding(x.shape[1], x.shape[2], x.device, x.dtype)
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = temporal_attention(attn, norm(x) + pe, temperature) + x
        return self.ff(self.ff_norm(x)) + x


def temporal_attention(attn, x, temperature=None):
    """``attn`` over the frames of ``x`` ``[rows, frames, dim]``. ``temperature`` ``[rows, 1, 1]``
    (TCAN's pose temperature map): every attention logit of a row is divided by its value, done as a
    division of that row's queries so the fused attention kernel still runs."""
    if temperature is None:
        return attn(x)
    return attn.attend(attn.to_q(x) / temperature, attn.to_k(x), attn.to_v(x))


class TemporalTransformer(torch.nn.Module):
    def __init__(self, channels, heads, *, num_blocks=1, norm_groups=32, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.norm = operations.GroupNorm(norm_groups, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        self.proj_in = operations.Linear(channels, channels, dtype=dtype, device=device)
        self.transformer_blocks = torch.nn.ModuleList(
            TemporalTransformerBlock(channels, heads, dtype=dtype, device=device, operations=operations)
            for _ in range(num_blocks))
        self.proj_out = operations.Linear(channels, channels, dtype=dtype, device=device)

    def forward(self, x, frames, temperature=None):
        # x: [(batch * frames), C, H, W]; GroupNorm is per frame, like the reference.
        # temperature: None or [batch, H, W], the pose temperature of each sample's pixels.
        bf, c, h, w = x.shape
        b = bf // frames
        if temperature is not None:
            temperature = temperature.reshape(b * h * w, 1, 1).to(device=x.device, dtype=x.dtype)
        y = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        y = self.proj_in(y)
        y = y.reshape(b, frames, h * w, c).transpose(1, 2).reshape(b * h * w, frames, c)
        for block in self.transformer_blocks:
            y = block(y, temperature)
        y = y.reshape(b, h * w, frames, c).transpose(1, 2).reshape(bf, h * w, c)
        y = self.proj_out(y)
        return y.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous() + x


class MotionModule(torch.nn.Module):
    def __init__(self, channels, heads=8, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(
            channels, heads, dtype=dtype, device=device, operations=operations)

    def forward(self, x, frames, temperature=None):
        return self.temporal_transformer(x, frames, temperature)
