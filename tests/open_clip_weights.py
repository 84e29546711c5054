"""A tiny OpenCLIP model's weights as a function of each key's name (shared by the test and
tools/make_open_clip_fixture.py, which ran open_clip itself on them)."""

import zlib

import torch

TINY = dict(embed_dim=32, image_size=28, patch=14, vision_width=128, vision_head_width=64, vision_layers=2,
            text_width=128, text_heads=2, text_layers=3)


def weight(key, shape):
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    x = torch.randn(tuple(shape), generator=g)
    name = key.rsplit(".", 1)[-1]
    if ".ln_" in key or key.startswith("ln_") or "ln_final" in key:
        return 1 + 0.1 * x if name == "weight" else 0.1 * x
    if name in ("bias", "in_proj_bias"):
        return 0.1 * x
    if name in ("class_embedding", "positional_embedding"):
        return 0.5 * x
    if name == "logit_scale":
        return torch.tensor(4.6)
    if x.ndim >= 2:
        return x / (x[0].numel() ** 0.5)
    return x


def state_dict(keys_and_shapes):
    return {k: weight(k, s) for k, s in keys_and_shapes.items()}


def pixels():
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, TINY["image_size"], TINY["image_size"], generator=g)
