"""OpenCLIP's image and text towers with open_clip's key names (``open_clip_pytorch_model.bin``),
for UniAnimate's conditioning without ComfyUI: the image embedding of the reference (``model.visual``:
``ln_post`` of the class token times ``proj``) and the empty prompt's tokens (``zero_y``: every layer
but the last, then ``ln_final``), as UniAnimate's ``FrozenOpenCLIPTextVisualEmbedder`` computes them.

Widths, depths and patch size come from the tensors' shapes; heads from open_clip's model configs
(ViT-H-14: 16 heads of 80 in the image tower, 16 of 64 in the text tower).
"""

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import sdpa_attention
from .loading import CheckpointError, default_device, default_dtype, read_state_dict

log = logging.getLogger(__name__)

SOT, EOT = 49406, 49407
CONTEXT_LENGTH = 77
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
VISION_HEADS = {1280: 16, 1664: 16}  # ViT-H, ViT-bigG (head widths 80, 104); others: 64-wide heads
DOWNLOAD = "https://huggingface.co/ZheWang123/UniAnimate (open_clip_pytorch_model.bin, OpenCLIP ViT-H-14)"


class OpenCLIPAttention(torch.nn.Module):
    """``nn.MultiheadAttention``'s parameters (fused ``in_proj``), through the pack's attention function."""

    def __init__(self, dim, heads, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = torch.nn.Parameter(torch.empty(3 * dim, dim, dtype=dtype, device=device))
        self.in_proj_bias = torch.nn.Parameter(torch.empty(3 * dim, dtype=dtype, device=device))
        self.out_proj = operations.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x, causal=False):
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(sdpa_attention(q, k, v, self.heads, causal=causal))


class ResidualAttentionBlock(torch.nn.Module):
    def __init__(self, dim, heads, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.ln_1 = operations.LayerNorm(dim, **kw)
        self.attn = OpenCLIPAttention(dim, heads, operations=operations, **kw)
        self.ln_2 = operations.LayerNorm(dim, **kw)
        self.mlp = torch.nn.Sequential()
        self.mlp.add_module("c_fc", operations.Linear(dim, 4 * dim, **kw))
        self.mlp.add_module("gelu", torch.nn.GELU())
        self.mlp.add_module("c_proj", operations.Linear(4 * dim, dim, **kw))

    def forward(self, x, causal=False):
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(torch.nn.Module):
    def __init__(self, dim, layers, heads, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.resblocks = torch.nn.ModuleList(
            ResidualAttentionBlock(dim, heads, dtype=dtype, device=device, operations=operations)
            for _ in range(layers))

    def forward(self, x, causal=False, skip_last=0):
        for block in self.resblocks[:len(self.resblocks) - skip_last]:
            x = block(x, causal)
        return x


class VisionTower(torch.nn.Module):
    """open_clip's ``VisionTransformer`` (class-token pooling): ``[B, 3, S, S]`` normalised pixels ->
    ``[B, embed_dim]``."""

    def __init__(self, width, layers, heads, patch, image_size, embed_dim, *, dtype=None, device=None,
                 operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.image_size = image_size
        self.conv1 = operations.Conv2d(3, width, patch, stride=patch, bias=False, **kw)
        self.class_embedding = torch.nn.Parameter(torch.empty(width, **kw))
        self.positional_embedding = torch.nn.Parameter(torch.empty((image_size // patch) ** 2 + 1, width, **kw))
        self.ln_pre = operations.LayerNorm(width, **kw)
        self.transformer = Transformer(width, layers, heads, operations=operations, **kw)
        self.ln_post = operations.LayerNorm(width, **kw)
        self.proj = torch.nn.Parameter(torch.empty(width, embed_dim, **kw))

    def forward(self, pixels):
        x = self.conv1(pixels.to(self.proj.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x)
        return self.ln_post(x[:, 0]) @ self.proj


class TextTower(torch.nn.Module):
    """open_clip's text transformer: token ids ``[B, 77]`` -> ``[B, 77, width]`` after ``ln_final``,
    leaving out the last ``skip_last`` layers (1: UniAnimate's and SD2's ``penultimate``)."""

    def __init__(self, width, layers, heads, vocab, context_length, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.token_embedding = operations.Embedding(vocab, width, **kw)
        self.positional_embedding = torch.nn.Parameter(torch.empty(context_length, width, **kw))
        self.transformer = Transformer(width, layers, heads, operations=operations, **kw)
        self.ln_final = operations.LayerNorm(width, **kw)

    def forward(self, tokens, skip_last=1):
        x = self.token_embedding(tokens) + self.positional_embedding
        return self.ln_final(self.transformer(x, causal=True, skip_last=skip_last))


def empty_prompt_tokens(context_length=CONTEXT_LENGTH):
    """``open_clip.tokenize("")``: start and end of text, then zeros; ``[1, context_length]``."""
    tokens = torch.zeros(1, context_length, dtype=torch.long)
    tokens[0, :2] = torch.tensor([SOT, EOT])
    return tokens


@dataclass
class OpenCLIP:
    """The towers loaded from one file; either may be None when it was not asked for."""

    visual: VisionTower | None
    text: TextTower | None
    path: str

    @torch.inference_mode()
    def encode_image(self, pixels):
        """``[B, 3, S, S]`` pixels normalised with :data:`MEAN`/:data:`STD` -> float32 ``[B, embed_dim]``."""
        p = self.visual.proj
        return self.visual(pixels.to(p.device, p.dtype)).float()

    @torch.inference_mode()
    def empty_prompt(self):
        """The empty prompt's tokens, penultimate layer then ``ln_final``: float32 ``[1, 77, width]``
        (UniAnimate's ``zero_y``)."""
        weight = self.text.token_embedding.weight
        tokens = empty_prompt_tokens(self.text.positional_embedding.shape[0]).to(weight.device)
        return self.text(tokens).float()


def _layers(sd, prefix):
    blocks = {int(k[len(prefix):].split(".", 1)[0]) for k in sd if k.startswith(prefix)}
    return max(blocks) + 1 if blocks else 0


def _build(module, sd, prefix, path, what):
    expected = module.state_dict()
    keys = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and not k.endswith("attn_mask")}
    missing, unexpected = expected.keys() - keys.keys(), keys.keys() - expected.keys()
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise CheckpointError(f"{path} does not hold OpenCLIP's {what} as open_clip saves it "
                              f"({'missing' if missing else 'unexpected'} {prefix}{example}; "
                              f"{len(missing)} missing, {len(unexpected)} unexpected);", f"download {DOWNLOAD}.")
    bad = [k for k, v in expected.items() if keys[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: {prefix}{bad[0]} has shape {tuple(keys[bad[0]].shape)}, expected "
                              f"{tuple(expected[bad[0]].shape)}; the file is damaged or from another model.")
    module.load_state_dict(keys, strict=True, assign=True)


def build_open_clip(sd, path, *, parts=("visual", "text"), device=None, dtype=None, operations=torch.nn):
    """The towers in ``parts`` from an open_clip state dict read from ``path`` (strict)."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    visual = text = None
    if "visual" in parts:
        if "visual.conv1.weight" not in sd or "visual.proj" not in sd:
            raise CheckpointError(f"{path} holds no OpenCLIP image tower (no visual.conv1.weight / visual.proj);",
                                  f"download {DOWNLOAD}.")
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        visual = VisionTower(width, _layers(sd, "visual.transformer.resblocks."), VISION_HEADS.get(width, width // 64),
                             patch, grid * patch, sd["visual.proj"].shape[1], device="meta", operations=operations)
        _build(visual, sd, "visual.", path, "image tower")
        visual = visual.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if "text" in parts:
        if "token_embedding.weight" not in sd or "ln_final.weight" not in sd:
            raise CheckpointError(f"{path} holds no OpenCLIP text tower (no token_embedding.weight / ln_final);",
                                  f"download {DOWNLOAD}.")
        vocab, width = sd["token_embedding.weight"].shape
        text = TextTower(width, _layers(sd, "transformer.resblocks."), width // 64, vocab,
                         sd["positional_embedding"].shape[0], device="meta", operations=operations)
        tower = {k: v for k, v in sd.items() if not k.startswith("visual.")
                 and k not in ("text_projection", "logit_scale", "logit_bias")}
        _build(text, tower, "", path, "text tower")
        text = text.to(device=device, dtype=dtype).eval().requires_grad_(False)
    log.info("PoseAnimate: loaded OpenCLIP %s from %s (%s, %s)", " and ".join(parts), path, device, dtype)
    return OpenCLIP(visual=visual, text=text, path=path)


def load_open_clip(path, *, parts=("visual", "text"), device=None, dtype=None, operations=torch.nn):
    """Load OpenCLIP's towers (``parts``: ``visual``, ``text``) from ``open_clip_pytorch_model.bin`` or a
    ``.safetensors`` copy of it."""
    unknown = set(parts) - {"visual", "text"}
    if unknown or not parts:
        raise ValueError(f"parts must name visual and/or text, got {list(parts)}")
    return build_open_clip(read_state_dict(path), str(path), parts=parts, device=device, dtype=dtype,
                           operations=operations)
