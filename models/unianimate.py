"""UniAnimate's video UNet (ali-vilab/UniAnimate, ``UNetSD_UniAnimate``) and its loader.

One 3D UNet, no ReferenceNet: every sample runs as ``1 + frames`` frames, the first being the
*reference frame* (the reference latent's and the reference pose's embeddings), the others the
noisy video with the pose embedding (and optionally the reference image's) concatenated as extra
input channels. Cross-attention reads the empty prompt's OpenCLIP text tokens (``zero_y``) followed by
``num_tokens`` tokens made from the OpenCLIP image embedding.

Tensors flow as ``[(samples * (1 + frames)), C, h, w]``. Spatial layers (ResBlock convolutions, the
spatial transformers, the head) see one frame at a time; the temporal convolutions and temporal
transformers see ``[samples, C, 1 + frames, h, w]`` and their GroupNorms pool over all frames.

State-dict keys are the release's (``input_blocks.4.0.temopral_conv.conv1.2.weight``, sic), so
``unianimate_16f_32f_non_ema_223000.pth`` loads unchanged; widths are read from tensor shapes.
"""

import logging
import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .attention import Attention, FeedForward, sdpa_attention
from .loading import CheckpointError, FamilyModels, default_device, default_dtype, read_state_dict
from .motion_module import temporal_attention
from .unet import Upsample

log = logging.getLogger(__name__)

DOWNLOAD = ("https://huggingface.co/ZheWang123/UniAnimate (unianimate_16f_32f_non_ema_223000.pth; "
            "ModelScope: iic/unianimate)")
TRAINED_LENGTH = 32
GROUPS = 32
INIT_HEADS = 8  # heads of the first temporal transformer (the released config's num_heads)
_MAX_ROWS = 32768  # rows per frame-attention call: rows * heads stays below CUDA's grid limit
_CHUNK_ELEMENTS = 1 << 27  # temporal transformers run a chunk of pixels at a time: the GEGLU's 8x-wide
# activation of one chunk stays below this many elements (256 MiB in fp16)
REQUIRED_PREFIXES = ("input_blocks.0.0.", "dwpose_embedding.", "randomref_embedding2.", "randomref_pose2_embedding.",
                     "pre_image_condition.", "time_embed.")


@dataclass(frozen=True)
class UniAnimateConfig:
    dim: int = 320
    dim_mult: tuple = (1, 2, 4, 4)
    attention_levels: tuple = (False, True, True, True)
    num_res_blocks: int = 2
    in_channels: int = 4
    out_channels: int = 4
    concat_dim: int = 8
    reference_channels: int = 4
    context_dim: int = 1024
    num_tokens: int = 4
    head_dim: int = 64
    local_image: bool = True


def sinusoidal_embedding(t, dim):
    """The reference's timestep sinusoid: ``[cos, sin]`` of ``t * 10000^(-i/half)``."""
    half = dim // 2
    t = t.float()
    freqs = torch.pow(10000, -torch.arange(half).to(t).div(half))
    sinusoid = torch.outer(t, freqs)
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def _chunked_rows(fn, x, rows=_MAX_ROWS, temperature=None):
    if x.shape[0] <= rows:
        return fn(x) if temperature is None else fn(x, temperature=temperature)
    if temperature is None:
        return torch.cat([fn(part) for part in x.split(rows)])
    return torch.cat([fn(part, temperature=tau) for part, tau in zip(x.split(rows), temperature.split(rows))])


class _HalfPool(torch.nn.Module):
    """``AdaptiveAvgPool2d((H/2, W/2))`` of the input's own size (the reference fixes it from the
    configured resolution, which is always the video size)."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, (x.shape[-2] // 2, x.shape[-1] // 2))


class _QKVAttention(torch.nn.Module):
    def __init__(self, dim, heads, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.heads = heads
        self.to_qkv = operations.Linear(dim, dim * heads * 3, bias=False, dtype=dtype, device=device)
        self.to_out = torch.nn.Sequential(operations.Linear(dim * heads, dim, dtype=dtype, device=device),
                                          torch.nn.Identity())
        self.attention_fn = sdpa_attention

    def forward(self, x):
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return self.to_out(self.attention_fn(q, k, v, self.heads))


class _PreNorm(torch.nn.Module):
    def __init__(self, dim, fn, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.norm = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x)) + x


class FrameTransformer(torch.nn.Module):
    """The condition embedders' ``Transformer_v2``: per pixel, attention over the frames ``[N, f, c]``
    (2 heads of width c), then an MLP without a norm."""

    def __init__(self, dim, depth=1, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        lin = dict(dtype=dtype, device=device)
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList([
                _PreNorm(dim, _QKVAttention(dim, 2, **kw), **kw),
                torch.nn.ModuleDict({"net": torch.nn.Sequential(
                    torch.nn.Sequential(operations.Linear(dim, dim * 4, **lin), torch.nn.GELU()),
                    torch.nn.Identity(),
                    operations.Linear(dim * 4, dim, **lin))}),
            ]) for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x)
            x = ff["net"](x) + x
        return x


def _image_embedder(channels, out, hidden, *, dtype=None, device=None, operations=torch.nn):
    """Conv stack of the pose / image embedders: full resolution -> 1/8 (average pool to half, two
    stride-2 convolutions)."""
    kw = dict(dtype=dtype, device=device)
    return torch.nn.Sequential(
        operations.Conv2d(channels, hidden, 3, padding=1, **kw), torch.nn.SiLU(), _HalfPool(),
        operations.Conv2d(hidden, hidden, 3, stride=2, padding=1, **kw), torch.nn.SiLU(),
        operations.Conv2d(hidden, out, 3, stride=2, padding=1, **kw))


class TemporalConvBlock(torch.nn.Module):
    """``TemporalConvBlock_v2``: 4 x (GroupNorm over all frames, SiLU, 3x1x1 conv), residual."""

    def __init__(self, dim, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)

        def layer(first):
            mods = [operations.GroupNorm(GROUPS, dim, **kw), torch.nn.SiLU()]
            if not first:
                mods.append(torch.nn.Identity())
            mods.append(operations.Conv3d(dim, dim, (3, 1, 1), padding=(1, 0, 0), **kw))
            return torch.nn.Sequential(*mods)

        self.conv1, self.conv2, self.conv3, self.conv4 = (layer(i == 0) for i in range(4))

    def forward(self, x):
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


def _to_video(x, batch):
    bf, c, h, w = x.shape
    return x.reshape(batch, bf // batch, c, h, w).transpose(1, 2)


def _from_video(x):
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


class ResBlock(torch.nn.Module):
    def __init__(self, cin, cout, emb_dim, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.in_layers = torch.nn.Sequential(operations.GroupNorm(GROUPS, cin, **kw), torch.nn.SiLU(),
                                             operations.Conv2d(cin, cout, 3, padding=1, **kw))
        self.emb_layers = torch.nn.Sequential(torch.nn.SiLU(), operations.Linear(emb_dim, cout, **kw))
        self.out_layers = torch.nn.Sequential(operations.GroupNorm(GROUPS, cout, **kw), torch.nn.SiLU(),
                                              torch.nn.Identity(), operations.Conv2d(cout, cout, 3, padding=1, **kw))
        self.skip_connection = operations.Conv2d(cin, cout, 1, **kw) if cin != cout else torch.nn.Identity()
        self.temopral_conv = TemporalConvBlock(cout, dtype=dtype, device=device, operations=operations)

    def forward(self, x, emb, batch):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        return _from_video(self.temopral_conv(_to_video(h, batch)))


class TransformerBlock(torch.nn.Module):
    """Self-attention, cross-attention (self-attention again when there is no context), GEGLU MLP.
    ``temperature`` ``[rows, 1, 1]`` (TCAN's map, temporal blocks only) divides every self-attention
    logit of a row."""

    def __init__(self, dim, heads, context_dim=None, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.attn1 = Attention(dim, heads, **kw)
        self.ff = FeedForward(dim, **kw)
        self.attn2 = Attention(dim, heads, context_dim, **kw)
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm3 = operations.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, x, context=None, temperature=None):
        x = temporal_attention(self.attn1, self.norm1(x), temperature) + x
        if context is None:
            x = temporal_attention(self.attn2, self.norm2(x), temperature) + x
        else:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(torch.nn.Module):
    """Per frame: GroupNorm, linear projection, one transformer block with cross-attention."""

    def __init__(self, channels, heads, context_dim, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.norm = operations.GroupNorm(GROUPS, channels, eps=1e-6, **kw)
        self.proj_in = operations.Linear(channels, channels, **kw)
        self.transformer_blocks = torch.nn.ModuleList(
            [TransformerBlock(channels, heads, context_dim, operations=operations, **kw)])
        self.proj_out = operations.Linear(channels, channels, **kw)

    def forward(self, x, context):
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            y = block(y, context)
        return self.proj_out(y).reshape(b, h, w, c).permute(0, 3, 1, 2) + x


class TemporalTransformer(torch.nn.Module):
    """Per pixel, self-attention over the frames (both attentions), GroupNorm over all frames, 1x1
    Conv1d projections to ``heads * head_dim``; no position encoding. ``temperature`` ``[batch, h, w]``:
    TCAN's pose temperature map of each sample's pixels."""

    def __init__(self, channels, heads, head_dim, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        inner = heads * head_dim
        self.norm = operations.GroupNorm(GROUPS, channels, eps=1e-6, **kw)
        self.proj_in = operations.Conv1d(channels, inner, 1, **kw)
        self.transformer_blocks = torch.nn.ModuleList([TransformerBlock(inner, heads, operations=operations, **kw)])
        self.proj_out = operations.Conv1d(inner, channels, 1, **kw)

    def forward(self, x, batch, temperature=None):
        v = _to_video(x, batch)
        b, c, f, h, w = v.shape
        y = self.norm(v).permute(0, 3, 4, 1, 2).reshape(b * h * w, c, f)
        y = self.proj_in(y).transpose(1, 2)
        if temperature is not None:
            temperature = temperature.reshape(b * h * w, 1, 1).to(device=y.device, dtype=y.dtype)
        rows = max(1, min(_MAX_ROWS, _CHUNK_ELEMENTS // (f * y.shape[-1] * 8)))
        for block in self.transformer_blocks:
            y = _chunked_rows(block, y, rows, temperature)
        y = self.proj_out(y.transpose(1, 2))
        y = y.reshape(b, h, w, c, f).permute(0, 4, 3, 1, 2).reshape(b * f, c, h, w)
        return x + y


class Downsample(torch.nn.Module):
    def __init__(self, channels, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.op = operations.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x):
        return self.op(x)


class UniAnimateUNet(torch.nn.Module):
    def __init__(self, cfg: UniAnimateConfig, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.config = cfg
        kw = dict(dtype=dtype, device=device, operations=operations)
        lin = dict(dtype=dtype, device=device)
        dim, ctx, cat = cfg.dim, cfg.context_dim, cfg.concat_dim
        ref = cat + cfg.reference_channels
        emb = dim * 4
        hidden = cat * 4

        self.time_embed = torch.nn.Sequential(operations.Linear(dim, emb, **lin), torch.nn.SiLU(),
                                              operations.Linear(emb, emb, **lin))
        self.pre_image_condition = torch.nn.Sequential(operations.Linear(ctx, ctx, **lin), torch.nn.SiLU(),
                                                       operations.Linear(ctx, ctx * cfg.num_tokens, **lin))
        if cfg.local_image:
            self.local_image_embedding = _image_embedder(3, cat, hidden, **kw)
            self.local_image_embedding_after = FrameTransformer(cat, **kw)
        self.dwpose_embedding = _image_embedder(3, cat, hidden, **kw)
        self.dwpose_embedding_after = FrameTransformer(cat, **kw)
        self.randomref_pose2_embedding = _image_embedder(3, ref, hidden, **kw)
        self.randomref_pose2_embedding_after = FrameTransformer(ref, **kw)
        self.randomref_embedding2 = torch.nn.Sequential(
            operations.Conv2d(cfg.reference_channels, hidden, 3, padding=1, **lin), torch.nn.SiLU(),
            operations.Conv2d(hidden, hidden, 3, padding=1, **lin), torch.nn.SiLU(),
            operations.Conv2d(hidden, ref, 3, padding=1, **lin))
        self.randomref_embedding_after2 = FrameTransformer(ref, **kw)

        widths = [dim * m for m in cfg.dim_mult]
        self.input_blocks = torch.nn.ModuleList([torch.nn.ModuleList([
            operations.Conv2d(cfg.in_channels + cat, dim, 3, padding=1, **lin),
            TemporalTransformer(dim, INIT_HEADS, cfg.head_dim, **kw)])])
        skips = [dim]
        cin = dim
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.input_blocks.append(self._layer(cin, width, cfg.attention_levels[level], **kw))
                cin = width
                skips.append(width)
            if level < len(widths) - 1:
                self.input_blocks.append(Downsample(width, **kw))
                skips.append(width)
        self.middle_block = torch.nn.ModuleList([
            ResBlock(cin, cin, emb, **kw), SpatialTransformer(cin, cin // cfg.head_dim, ctx, **kw),
            TemporalTransformer(cin, cin // cfg.head_dim, cfg.head_dim, **kw), ResBlock(cin, cin, emb, **kw)])
        self.output_blocks = torch.nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for j in range(cfg.num_res_blocks + 1):
                block = self._layer(cin + skips.pop(), width, cfg.attention_levels[level], **kw)
                cin = width
                if level > 0 and j == cfg.num_res_blocks:
                    block.append(Upsample(width, **kw))
                self.output_blocks.append(block)
        self.out = torch.nn.Sequential(operations.GroupNorm(GROUPS, cin, **lin), torch.nn.SiLU(),
                                       operations.Conv2d(cin, cfg.out_channels, 3, padding=1, **lin))

    def _layer(self, cin, cout, attention, **kw):
        cfg = self.config
        layer = torch.nn.ModuleList([ResBlock(cin, cout, cfg.dim * 4, **kw)])
        if attention:
            heads = cout // cfg.head_dim
            layer.append(SpatialTransformer(cout, heads, cfg.context_dim, **kw))
            layer.append(TemporalTransformer(cout, heads, cfg.head_dim, **kw))
        return layer

    @property
    def dtype(self):
        return self.time_embed[0].weight.dtype

    # ------------------------------------------------------------------------------------------ conditions

    def _embed_frames(self, conv, after, images, chunk=8):
        """``images`` ``[f, C, H, W]`` (one sample's frames) -> ``[f, c, H/8, W/8]``: the conv stack per
        frame (``chunk`` frames at a time), then the frame transformer per pixel."""
        feats = torch.cat([conv(images[i:i + chunk]) for i in range(0, images.shape[0], chunk)])
        f, c, h, w = feats.shape
        y = _chunked_rows(after, feats.permute(2, 3, 0, 1).reshape(h * w, f, c))
        return y.reshape(h, w, f, c).permute(2, 3, 0, 1)

    def embed_pose(self, pose_images):
        """Pose images ``[f, 3, H, W]`` in [0, 1] (one window) -> ``[f, concat_dim, H/8, W/8]``."""
        return self._embed_frames(self.dwpose_embedding, self.dwpose_embedding_after, pose_images)

    def embed_local_image(self, image, frames):
        """The reference image ``[3, H, W]`` as every frame's first-frame condition ->
        ``[frames, concat_dim, H/8, W/8]``."""
        if not self.config.local_image:
            raise ValueError("this UniAnimate network has no local_image_embedding, so first_frame=True is not "
                             "available; use first_frame=False")
        images = image[None].expand(frames, -1, -1, -1)
        return self._embed_frames(self.local_image_embedding, self.local_image_embedding_after, images)

    def embed_reference(self, latent, pose_image):
        """The reference frame: latent ``[1, 4, h, w]`` (x 0.18215) and its pose ``[1, 3, H, W]`` ->
        ``[1, concat_dim + 4, h, w]``."""
        a = self._embed_frames(self.randomref_embedding2, self.randomref_embedding_after2, latent)
        b = self._embed_frames(self.randomref_pose2_embedding, self.randomref_pose2_embedding_after, pose_image)
        return a + b

    def image_tokens(self, image_embeds):
        """OpenCLIP image embedding ``[1, C]`` -> ``[1, num_tokens, C]`` context tokens."""
        return self.pre_image_condition(image_embeds).view(-1, self.config.num_tokens, self.config.context_dim)

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, x, t, context, concat, reference, temperature=None):
        """``x`` ``[B, f, 4, h, w]``; ``t`` the integer timestep; ``context`` ``[B, T, C]``;
        ``concat`` ``[B, f, concat_dim, h, w]``; ``reference`` ``[B, concat_dim + 4, h, w]``;
        ``temperature``: TCAN's map ``{(h, w): [B, h, w]}`` per resolution, read by the temporal
        transformers of the input and output blocks (not the middle block, as TCAN's motion modules).
        Returns the prediction ``[B, f, 4, h, w]`` (the reference frame dropped)."""
        b, f = x.shape[:2]
        frames = torch.cat([reference[:, None], torch.cat([x, concat], dim=2)], dim=1)
        h = frames.reshape(b * (f + 1), *frames.shape[2:])
        t = torch.as_tensor(t, device=x.device).reshape(1)
        emb = self.time_embed(sinusoidal_embedding(t, self.config.dim).to(h.dtype))
        context = context.repeat_interleave(f + 1, dim=0)
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb, context, b, temperature=temperature)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, context, b)
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, emb, context, b, skips[-1].shape[-2:] if skips else None, temperature)
        h = self.out(h)
        return h.reshape(b, f + 1, *h.shape[1:])[:, 1:]

    def _run(self, block, h, emb, context, batch, size=None, temperature=None):
        for layer in block if isinstance(block, torch.nn.ModuleList) else [block]:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, batch, None if temperature is None else temperature[tuple(h.shape[-2:])])
            elif isinstance(layer, Upsample):
                h = layer(h, size)
            else:
                h = layer(h)
        return h


def set_attention_fn(model, fn):
    """Make the frame transformers' attention call ``fn(q, k, v, heads)`` too (see models.attention.set_attention)."""
    for module in model.modules():
        if isinstance(module, _QKVAttention):
            module.attention_fn = fn


# ---------------------------------------------------------------------------------------------------- loading


def is_unianimate(sd):
    return all(any(k.startswith(p) for k in sd) for p in REQUIRED_PREFIXES)


def unianimate_config(sd, path="the state dict"):
    """Widths and levels from the tensor shapes."""
    missing = [p.rstrip(".") for p in REQUIRED_PREFIXES if not any(k.startswith(p) for k in sd)]
    if missing:
        raise CheckpointError(f"{path} is not a UniAnimate UNet: no {', '.join(missing)} weights. "
                              f"Download unianimate_16f_32f_non_ema_223000.pth from {DOWNLOAD}.")
    dim, first_in = sd["input_blocks.0.0.weight"].shape[:2]
    concat = sd["dwpose_embedding.5.weight"].shape[0]
    ref = sd["randomref_embedding2.4.weight"].shape[0] - concat
    context = sd["pre_image_condition.0.weight"].shape[1]
    heads_width = sd["input_blocks.0.1.proj_in.weight"].shape[0]
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    levels = [[]]
    for i in blocks[1:]:
        if f"input_blocks.{i}.op.weight" in sd:
            levels.append([])
        elif f"input_blocks.{i}.0.in_layers.2.weight" in sd:
            levels[-1].append(i)
        else:
            raise CheckpointError(f"{path}: input block {i} is neither a ResBlock nor a downsampler; "
                                  "this is not a UniAnimate UNet file.")
    res_blocks = len(levels[0])
    if not res_blocks or any(len(level) != res_blocks for level in levels):
        raise CheckpointError(f"{path}: uneven encoder levels {[len(level) for level in levels]}; "
                              "this is not a UniAnimate UNet file.")
    widths = [sd[f"input_blocks.{level[0]}.0.in_layers.2.weight"].shape[0] for level in levels]
    attention = [f"input_blocks.{level[0]}.1.norm.weight" in sd for level in levels]
    if any(w % dim for w in widths) or heads_width % INIT_HEADS:
        raise CheckpointError(f"{path}: unexpected widths {widths} for a UniAnimate UNet of width {dim}.")
    return UniAnimateConfig(
        dim=dim, dim_mult=tuple(w // dim for w in widths), attention_levels=tuple(attention),
        num_res_blocks=res_blocks, in_channels=first_in - concat, out_channels=sd["out.2.weight"].shape[0],
        concat_dim=concat, reference_channels=ref, context_dim=context,
        num_tokens=sd["pre_image_condition.2.weight"].shape[0] // context, head_dim=heads_width // INIT_HEADS,
        local_image="local_image_embedding.0.weight" in sd)


@dataclass
class UniAnimateModels(FamilyModels):
    unet: UniAnimateUNet
    family: str = "unianimate"
    trained_length: int = TRAINED_LENGTH
    files: dict = field(default_factory=dict)

    @property
    def main_weight(self):
        return self.unet.time_embed[0].weight

    @property
    def embed_dim(self):
        return self.unet.config.context_dim


def _summary(keys, limit=4):
    if len(keys) <= limit:
        return ", ".join(sorted(keys))
    groups = sorted({re.sub(r"\.\d+(?=\.|$)", ".*", k).rsplit(".", 1)[0] for k in keys})
    more = f"; and {len(groups) - limit} more" if len(groups) > limit else ""
    return ", ".join(groups[:limit]) + more


def build_unianimate(sd, path, *, device=None, dtype=None, operations=torch.nn):
    """Build the UNet from a state dict read from ``path``; every key must match (strict)."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    cfg = unianimate_config(sd, path)
    unet = UniAnimateUNet(cfg, device="meta", operations=operations)
    expected = {k: v.shape for k, v in unet.state_dict().items()}
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing or unexpected:
        parts = [f"{path} is not a usable UniAnimate UNet file:"]
        if missing:
            parts.append(f"missing {len(missing)} keys ({_summary(missing)});")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({_summary(unexpected)});")
        parts.append(f"expected the release's unianimate_16f_32f_non_ema_223000.pth from {DOWNLOAD}.")
        raise CheckpointError(" ".join(parts))
    bad = [k for k, s in expected.items() if sd[k].shape != s]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensors have unexpected shapes for a UniAnimate UNet "
                              f"(e.g. {bad[0]}: "
                              f"{tuple(sd[bad[0]].shape)}, expected {tuple(expected[bad[0]])}); the file is damaged "
                              "or from another model.")
    unet.load_state_dict(sd, strict=True, assign=True)
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info("PoseAnimate: loaded UniAnimate UNet (%s, %s)", device, dtype)
    return unet


def find_unianimate_file(folder):
    """The UniAnimate UNet file in ``folder`` (recognised by its keys), with its state dict, or None."""
    from .loading import WEIGHT_EXTENSIONS

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.lower().endswith(WEIGHT_EXTENSIONS) and os.path.isfile(path):
            sd = read_state_dict(path)
            if is_unianimate(sd):
                return path, sd
    return None


def load_unianimate(path, device=None, dtype=None, operations=torch.nn):
    """Load the UniAnimate UNet from a file or a folder holding it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = find_unianimate_file(path)
        if found is None:
            raise CheckpointError(f"model folder {path} holds no UniAnimate UNet file; download "
                                  f"unianimate_16f_32f_non_ema_223000.pth from {DOWNLOAD}.")
        path, sd = found
    else:
        sd = read_state_dict(path)
    unet = build_unianimate(sd, path, device=device, dtype=dtype, operations=operations)
    return UniAnimateModels(unet=unet, files={"unet": path})
