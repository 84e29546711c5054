"""The Stable Diffusion 1.5 UNet in the two roles Animate Anyone gives it.

* ReferenceNet: the 2D UNet run once on the reference latents; every spatial transformer block
  records the input of its self-attention (the ``norm1`` output).
* Denoising UNet: the same topology with a motion module after each resnet(+attention) pair in
  every down/up block and after the mid block's attention; pose features are added to the
  ``conv_in`` output; in its spatial self-attention the rows that read the reference attend over
  concat(own tokens, reference tokens) of the same block.

Both are this one class, and so are MagicAnimate's appearance encoder and 3D UNet (config options:
no mid-block motion module, resnet and output GroupNorm pooled over a window's frames, ControlNet
residuals and reference features only in some blocks through :class:`AttentionState`).
Tensors flow as ``[(samples * frames), C, H, W]``; GroupNorm is per frame unless ``video_norm``.
State-dict keys are diffusers' (``down_blocks.0.attentions.1.transformer_blocks.0...``)
so the released files load unchanged.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import Attention, FeedForward
from .motion_module import MotionModule


@dataclass(frozen=True)
class UNetConfig:
    block_out_channels: tuple = (320, 640, 1280, 1280)
    in_channels: int = 4
    out_channels: int = 4
    cross_attention_dim: int = 768
    layers_per_block: int = 2
    heads: int = 8
    norm_groups: int = 32
    norm_eps: float = 1e-5
    motion_modules: bool = False
    has_output: bool = True
    attention_blocks: tuple = (True, True, True, False)
    motion_mid: bool = True
    video_norm: bool = False


@dataclass
class AttentionState:
    """What one forward pass needs to share with the transformer blocks.

    ``frames``: frames per sample. ``capture``: dict filled with each block's self-attention input
    (ReferenceNet). ``reference``: per-block ``(k, v)`` of the reference tokens, read by the rows
    from ``plain_rows`` on (rows before it do plain self-attention: the unconditional samples); a
    block whose entry is None does plain self-attention. ``residuals``: ControlNet outputs
    ``(skips, mid)`` added to the skip connections and to the mid block's output.
    ``temperature``: TCAN's pose temperature map, ``{(h, w): [samples, h, w]}`` per motion-module
    grid (see :mod:`..sampling.temperature`), read by the motion modules of the down and up blocks
    (not the mid block's, as in TCAN); None = off.
    """

    frames: int = 1
    capture: dict | None = None
    reference: list | None = None
    plain_rows: int = 0
    residuals: tuple | None = None
    temperature: dict | None = None


def timestep_embedding(t, dim):
    """diffusers ``get_timestep_embedding`` with flip_sin_to_cos=True, shift 0."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)


class TimestepEmbedding(torch.nn.Module):
    def __init__(self, dim, out, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.linear_1 = operations.Linear(dim, out, dtype=dtype, device=device)
        self.linear_2 = operations.Linear(out, out, dtype=dtype, device=device)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def group_norm(norm, x, frames=1):
    """``norm`` on ``[(samples*frames), C, H, W]``; with ``frames > 1`` its statistics are pooled over
    each sample's frames (a GroupNorm on ``[samples, C, frames, H, W]``, as in MagicAnimate's 3D UNet)."""
    if frames == 1:
        return norm(x)
    bf, c, h, w = x.shape
    y = x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)
    return norm(y).transpose(1, 2).reshape(bf, c, h, w)


class ResnetBlock(torch.nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.norm1 = operations.GroupNorm(groups, cin, eps=eps, affine=True, **kw)
        self.conv1 = operations.Conv2d(cin, cout, 3, padding=1, **kw)
        self.time_emb_proj = operations.Linear(temb, cout, **kw)
        self.norm2 = operations.GroupNorm(groups, cout, eps=eps, affine=True, **kw)
        self.conv2 = operations.Conv2d(cout, cout, 3, padding=1, **kw)
        self.conv_shortcut = operations.Conv2d(cin, cout, 1, **kw) if cin != cout else None

    def forward(self, x, temb, frames=1):
        h = self.conv1(F.silu(group_norm(self.norm1, x, frames)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(group_norm(self.norm2, h, frames)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class TransformerBlock(torch.nn.Module):
    def __init__(self, dim, heads, context_dim, index, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.index = index
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.attn1 = Attention(dim, heads, **kw)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.attn2 = Attention(dim, heads, context_dim, **kw)
        self.norm3 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.ff = FeedForward(dim, **kw)

    def forward(self, x, context, state: AttentionState):
        n = self.norm1(x)
        if state.capture is not None:
            state.capture[self.index] = n
        x = self._self_attention(n, state) + x
        x = self._cross_attention(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x

    def _self_attention(self, n, state):
        attn = self.attn1
        if state.reference is None or state.reference[self.index] is None:
            return attn(n)
        split = state.plain_rows * state.frames
        q, k, v = attn.to_q(n), attn.to_k(n), attn.to_v(n)
        ref_k, ref_v = state.reference[self.index]
        rows = n.shape[0] - split
        k_read = torch.cat([k[split:], ref_k.expand(rows, -1, -1)], dim=1)
        v_read = torch.cat([v[split:], ref_v.expand(rows, -1, -1)], dim=1)
        read = attn.attend(q[split:], k_read, v_read)
        if split == 0:
            return read
        return torch.cat([attn.attend(q[:split], k[:split], v[:split]), read], dim=0)

    def _cross_attention(self, n, context):
        if context.shape[1] != 1:
            return self.attn2(n, context)
        # One context token: softmax over a single key is exactly 1, so every query gets the
        # projected value of that token.
        return self.attn2.to_out[0](self.attn2.to_v(context)).expand_as(n)


class SpatialTransformer(torch.nn.Module):
    """diffusers ``Transformer2DModel`` (conv projections, one block)."""

    def __init__(self, channels, heads, context_dim, groups, index, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.norm = operations.GroupNorm(groups, channels, eps=1e-6, affine=True, **kw)
        self.proj_in = operations.Conv2d(channels, channels, 1, **kw)
        self.transformer_blocks = torch.nn.ModuleList(
            [TransformerBlock(channels, heads, context_dim, index, operations=operations, **kw)])
        self.proj_out = operations.Conv2d(channels, channels, 1, **kw)

    def forward(self, x, context, state):
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, context, state)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + x


class Downsample(torch.nn.Module):
    def __init__(self, channels, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x):
        return self.conv(x)


class Upsample(torch.nn.Module):
    def __init__(self, channels, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Block(torch.nn.Module):
    """A down, mid or up block: ``layers`` x (resnet [, attention] [, motion module])."""

    def __init__(self, resnet_channels, channels, cfg: UNetConfig, attention, first_index, *,
                 mid=False, down=False, up=False, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        temb = cfg.block_out_channels[0] * 4
        groups, eps = cfg.norm_groups, cfg.norm_eps
        self.resnets = torch.nn.ModuleList(ResnetBlock(cin, channels, temb, groups, eps, **kw) for cin in resnet_channels)
        layers = len(resnet_channels) - 1 if mid else len(resnet_channels)
        if attention:
            self.attentions = torch.nn.ModuleList(
                SpatialTransformer(channels, cfg.heads, cfg.cross_attention_dim, groups, first_index + i, **kw)
                for i in range(layers))
        if cfg.motion_modules and (cfg.motion_mid or not mid):
            self.motion_modules = torch.nn.ModuleList(MotionModule(channels, cfg.heads, **kw) for _ in range(layers))
        if down:
            self.downsamplers = torch.nn.ModuleList([Downsample(channels, **kw)])
        if up:
            self.upsamplers = torch.nn.ModuleList([Upsample(channels, **kw)])
        self.mid = mid
        self.video_norm = cfg.video_norm

    def num_attentions(self):
        return len(self.attentions) if hasattr(self, "attentions") else 0

    def _layer(self, i, x, context, state):
        if hasattr(self, "attentions"):
            x = self.attentions[i](x, context, state)
        if hasattr(self, "motion_modules"):
            tau = None if self.mid or state.temperature is None else state.temperature[tuple(x.shape[-2:])]
            x = self.motion_modules[i](x, state.frames, tau)
        return x

    def _resnet(self, i, x, temb, state):
        return self.resnets[i](x, temb, state.frames if self.video_norm else 1)

    def forward_down(self, x, temb, context, state, skips):
        for i in range(len(self.resnets)):
            x = self._layer(i, self._resnet(i, x, temb, state), context, state)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x

    def forward_mid(self, x, temb, context, state):
        x = self._resnet(0, x, temb, state)
        for i in range(1, len(self.resnets)):
            x = self._resnet(i, self._layer(i - 1, x, context, state), temb, state)
        return x

    def forward_up(self, x, temb, context, state, skips):
        for i in range(len(self.resnets)):
            x = self._layer(i, self._resnet(i, torch.cat([x, skips.pop()], dim=1), temb, state), context, state)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, skips[-1].shape[-2:])
        return x


def down_blocks(cfg: UNetConfig, **kw):
    """The encoder half of an SD1.5-layout UNet (shared with the ControlNet): ``(blocks, how many attention
    blocks they hold, the channels of every skip connection in order, conv_in's first)``."""
    ch = cfg.block_out_channels
    n = len(ch)
    index = 0
    skip_channels = [ch[0]]
    blocks = torch.nn.ModuleList()
    for i in range(n):
        resnets = [ch[max(i - 1, 0)]] + [ch[i]] * (cfg.layers_per_block - 1)
        block = Block(resnets, ch[i], cfg, cfg.attention_blocks[i], index, down=i < n - 1, **kw)
        index += block.num_attentions()
        skip_channels += [ch[i]] * (cfg.layers_per_block + (i < n - 1))
        blocks.append(block)
    return blocks, index, skip_channels


class UNet(torch.nn.Module):
    def __init__(self, cfg: UNetConfig, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.config = cfg
        kw = dict(dtype=dtype, device=device, operations=operations)
        ch = cfg.block_out_channels
        n = len(ch)
        self.conv_in = operations.Conv2d(cfg.in_channels, ch[0], 3, padding=1, dtype=dtype, device=device)
        self.time_embedding = TimestepEmbedding(ch[0], ch[0] * 4, **kw)
        self.down_blocks, index, skip_channels = down_blocks(cfg, **kw)

        # Block indices follow the reference implementation's module order (down, up, mid), so
        # ReferenceNet block i feeds denoising block i.
        self.up_blocks = torch.nn.ModuleList()
        prev = ch[-1]
        for i in range(n):
            out = ch[n - 1 - i]
            resnets = []
            for _ in range(cfg.layers_per_block + 1):
                resnets.append(prev + skip_channels.pop())
                prev = out
            block = Block(resnets, out, cfg, cfg.attention_blocks[n - 1 - i], index, up=i < n - 1, **kw)
            index += block.num_attentions()
            self.up_blocks.append(block)

        self.mid_block = Block([ch[-1], ch[-1]], ch[-1], cfg, True, index, mid=True, **kw)
        self.num_transformer_blocks = index + self.mid_block.num_attentions()

        if cfg.has_output:
            self.conv_norm_out = operations.GroupNorm(cfg.norm_groups, ch[0], eps=cfg.norm_eps, affine=True,
                                                      dtype=dtype, device=device)
            self.conv_out = operations.Conv2d(ch[0], cfg.out_channels, 3, padding=1, dtype=dtype, device=device)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, x, t, context, state: AttentionState, pose=None):
        """``x`` ``[(samples*frames), 4, h, w]``; ``t`` a scalar timestep; ``context`` ``[samples*frames, T, C]``
        (or ``[1, T, C]`` shared); ``pose`` features added after ``conv_in``."""
        t = torch.as_tensor(t, device=x.device).reshape(1)
        temb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(x.dtype))
        h = self.conv_in(x)
        if pose is not None:
            h = h + pose
        skips = [h]
        for block in self.down_blocks:
            h = block.forward_down(h, temb, context, state, skips)
        if state.residuals is not None:
            skips = [s + r for s, r in zip(skips, state.residuals[0], strict=True)]
        h = self.mid_block.forward_mid(h, temb, context, state)
        if state.residuals is not None:
            h = h + state.residuals[1]
        for block in self.up_blocks:
            h = block.forward_up(h, temb, context, state, skips)
        if not self.config.has_output:
            return h
        frames = state.frames if self.config.video_norm else 1
        return self.conv_out(F.silu(group_norm(self.conv_norm_out, h, frames)))

    def transformer_blocks(self):
        blocks = [m for m in self.modules() if isinstance(m, TransformerBlock)]
        return sorted(blocks, key=lambda b: b.index)

    def reference_keys_values(self, captured, dtype=None):
        """Per-block ``(k, v)`` of the ReferenceNet's recorded tokens, projected by this UNet's
        self-attention weights. The reference implementation hands the recorded tokens over in
        float16; they are rounded the same way here."""
        kv = []
        for block in self.transformer_blocks():
            tokens = captured[block.index].to(torch.float16).to(dtype or block.attn1.to_k.weight.dtype)
            kv.append((block.attn1.to_k(tokens), block.attn1.to_v(tokens)))
        return kv
