"""Single-file Stable Diffusion 1.x checkpoints (the original LDM layout ComfyUI users keep in
``models/checkpoints``): the UNet's ``model.diffusion_model.*`` keys renamed to diffusers' names.

LDM numbers its encoder ``input_blocks.K`` (K=0 is ``conv_in``; then per level, one entry per layer
holding ``0`` the resnet and ``1`` the attention, and one entry ``0.op`` for the downsampler),
``middle_block.{0,1,2}`` (resnet, attention, resnet) and ``output_blocks.K`` (per level,
layers_per_block + 1 entries: ``0`` resnet, ``1`` attention or upsampler, ``2`` upsampler). The level
structure is read from the keys, so narrow test networks and the released 4 GB files take the same path.
"""

import re

PREFIX = "model.diffusion_model."

_TOP = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
        "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."}
_RESNET = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
           "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}


def is_ldm_unet(sd):
    return any(k.startswith(PREFIX + "input_blocks.") for k in sd)


def _entries(keys, group):
    """``{K: {sub-index: set of parameter names}}`` of ``input_blocks`` / ``output_blocks``."""
    out = {}
    for k in keys:
        m = re.match(rf"{group}\.(\d+)\.(\d+)\.(.+)$", k)
        if m:
            out.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), set()).add(m.group(3))
    return out


def _kind(params):
    if any(p.startswith("in_layers.") for p in params):
        return "resnet"
    if any(p.startswith(("proj_in.", "transformer_blocks.")) for p in params):
        return "attention"
    if any(p.startswith(("op.", "conv.")) for p in params):
        return "sample"
    raise ValueError(f"unrecognised LDM UNet entry with parameters {sorted(params)[:3]}")


def _rename(param, kind):
    if kind == "resnet":
        for old, new in _RESNET.items():
            if param.startswith(old):
                return new + param[len(old):]
        raise ValueError(f"unrecognised LDM resnet parameter {param}")
    if kind == "sample":
        return "conv." + param.split(".", 1)[1]
    return param


def key_map(keys):
    """``{ldm_key: diffusers_key}`` for every UNet key of a checkpoint (keys with ``PREFIX``)."""
    unet = [k[len(PREFIX):] for k in keys if k.startswith(PREFIX)]
    mapping = {}
    for k in unet:
        for old, new in _TOP.items():
            if k.startswith(old):
                mapping[k] = new + k[len(old):]
    for k in unet:
        m = re.match(r"middle_block\.(\d)\.(.+)$", k)
        if m:
            i, param = int(m.group(1)), m.group(2)
            kind = "attention" if i == 1 else "resnet"
            where = "attentions.0" if i == 1 else f"resnets.{i // 2}"
            mapping[k] = f"mid_block.{where}." + _rename(param, kind)

    level, layer = 0, 0
    inputs = _entries(unet, "input_blocks")
    for idx in sorted(i for i in inputs if i > 0):
        subs = inputs[idx]
        if _kind(subs[0]) == "sample":
            for p in subs[0]:
                mapping[f"input_blocks.{idx}.0.{p}"] = f"down_blocks.{level}.downsamplers.0." + _rename(p, "sample")
            level, layer = level + 1, 0
            continue
        for sub, params in subs.items():
            kind = _kind(params)
            where = f"resnets.{layer}" if kind == "resnet" else f"attentions.{layer}"
            for p in params:
                mapping[f"input_blocks.{idx}.{sub}.{p}"] = f"down_blocks.{level}.{where}." + _rename(p, kind)
        layer += 1

    outputs = _entries(unet, "output_blocks")
    layers = sum(1 for i in inputs if i > 0 and _kind(inputs[i][0]) != "sample") // (level + 1)
    per_level = layers + 1
    for idx in sorted(outputs):
        up, layer = divmod(idx, per_level)
        for sub, params in outputs[idx].items():
            kind = _kind(params)
            where = {"resnet": f"resnets.{layer}", "attention": f"attentions.{layer}", "sample": "upsamplers.0"}[kind]
            for p in params:
                mapping[f"output_blocks.{idx}.{sub}.{p}"] = f"up_blocks.{up}.{where}." + _rename(p, kind)

    unmapped = [k for k in unet if k not in mapping]
    if unmapped:
        raise ValueError(f"unrecognised LDM UNet keys, e.g. {PREFIX}{unmapped[0]}")
    return {PREFIX + k: v for k, v in mapping.items()}


def unet_to_diffusers(sd):
    """The UNet of a single-file checkpoint with diffusers key names (other models' keys dropped)."""
    return {new: sd[old] for old, new in key_map(sd.keys()).items()}


# ---------------------------------------------------------------------------------------------- VAE

VAE_PREFIX = "first_stage_model."
_VAE_RESNET = {"nin_shortcut.": "conv_shortcut."}
_VAE_ATTENTION = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."}
_VAE_TOP = {"norm_out.": "conv_norm_out."}


def is_ldm_vae(sd):
    return any(k.startswith(VAE_PREFIX + "encoder.down.") for k in sd)


def _renamed(param, table):
    for old, new in table.items():
        if param.startswith(old):
            return new + param[len(old):]
    return param


def _vae_key(key, levels):
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return key
    m = re.match(r"(down|up)\.(\d+)\.(?:block\.(\d+)|(downsample|upsample))\.(.+)$", rest)
    if m:
        kind, i, layer, sampler, param = m.groups()
        level = int(i) if kind == "down" else levels - 1 - int(i)
        where = f"{part}.{kind}_blocks.{level}"
        if layer is not None:
            return f"{where}.resnets.{layer}.{_renamed(param, _VAE_RESNET)}"
        return f"{where}.{sampler}rs.0.{param}"
    m = re.match(r"mid\.block_(\d)\.(.+)$", rest)
    if m:
        return f"{part}.mid_block.resnets.{int(m.group(1)) - 1}.{_renamed(m.group(2), _VAE_RESNET)}"
    m = re.match(r"mid\.attn_1\.(.+)$", rest)
    if m:
        return f"{part}.mid_block.attentions.0.{_renamed(m.group(1), _VAE_ATTENTION)}"
    return f"{part}.{_renamed(rest, _VAE_TOP)}"


def vae_to_diffusers(sd):
    """The VAE of a single-file checkpoint (``first_stage_model.*``, LDM's AutoencoderKL) as diffusers'
    ``AutoencoderKL``: ``(config, state_dict)``. The mid-block attention's 1x1 convolutions become the
    linear layers diffusers uses (same numbers)."""
    vae = {k[len(VAE_PREFIX):]: v for k, v in sd.items() if k.startswith(VAE_PREFIX)}
    levels = 1 + max(int(m.group(1)) for k in vae if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    widths = [vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
    layers = 1 + max(int(m.group(1)) for k in vae if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    out = {}
    for key, value in vae.items():
        new = _vae_key(key, levels)
        if ".mid_block.attentions." in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    config = dict(in_channels=vae["encoder.conv_in.weight"].shape[1],
                  out_channels=vae["decoder.conv_out.weight"].shape[0],
                  down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                  block_out_channels=tuple(widths), layers_per_block=layers,
                  latent_channels=vae["post_quant_conv.weight"].shape[1], scaling_factor=0.18215)
    return config, out
