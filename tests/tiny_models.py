"""Model files for tests, written at test time in the released layouts.

* :func:`write_animate_folder`: an Animate Anyone (``moore``) or MusePose folder with the real key
  names and file layout (see tests/data/parity/README.md), narrow blocks, and a cross-attention
  width that matches the CLIP vision projection (768 for ComfyUI's ViT-L), built with our models code.
* :func:`write_unianimate`: a UniAnimate UNet file (``UNetSD_UniAnimate`` key names, narrow levels),
  built with our models code; ``context_dim`` must match the image encoder's projection and the text
  encoder's width it is used with.
* :func:`write_clip_vision_vitl`: a CLIP ViT-L/14 vision encoder with projection (transformers key
  names) that ComfyUI's CLIPVisionLoader recognises; ComfyUI picks the config by keys and fixes its
  size (24 layers, width 1024), so this one is full size with random weights (fp16, ~600 MB).
* :func:`write_clip_text_l`: a CLIP ViT-L/14 text encoder (transformers key names) that ComfyUI's
  CLIPLoader reads as SD1.5's; full size (12 layers, width 768), random weights (fp16, ~250 MB).
* :func:`write_sd_vae`: an SD1.5-shaped VAE (diffusers layout) with random weights (fp16, ~160 MB);
  ComfyUI's VAELoader fixes its widths too.
* :func:`write_dwpose`: stand-in DWPose ONNX files; the pose model puts a whole-body skeleton at
  fixed places in each detected person box (:data:`SKELETON`), so retargeting has bones to measure.
* :func:`person_frames`: frames with a "person" (a red box) the stand-in detector finds.
"""

import os

import numpy as np
import torch

# (x, y) of the 17 COCO body points in a person crop, as fractions of its width and height.
SKELETON = np.array([
    (0.50, 0.12), (0.53, 0.10), (0.47, 0.10), (0.56, 0.11), (0.44, 0.11),  # nose, eyes, ears
    (0.62, 0.25), (0.38, 0.25), (0.68, 0.40), (0.32, 0.40), (0.70, 0.53), (0.30, 0.53),  # arms
    (0.57, 0.55), (0.43, 0.55), (0.58, 0.72), (0.42, 0.72), (0.58, 0.88), (0.42, 0.88),  # legs
])


def write_animate_folder(path, variant="moore", width=32, cross_attention_dim=768, pose_channels=(16, 32, 96, 256),
                         trained_length=24, seed=0):
    """Write ``reference_unet.pth``, ``denoising_unet.pth``, ``pose_guider.pth`` and (moore)
    ``motion_module.pth`` with random weights; returns ``path``."""
    from poseanimate.models.motion_module import position_encoding
    from poseanimate.models.pose_guider import PoseGuider
    from poseanimate.models.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    os.makedirs(path, exist_ok=True)
    config = dict(block_out_channels=(width,) * 4, cross_attention_dim=cross_attention_dim)
    reference = UNet(UNetConfig(**config, has_output=False)).state_dict()
    denoising = UNet(UNetConfig(**config, motion_modules=True)).state_dict()
    guider = PoseGuider(pose_channels, width).state_dict()
    motion = {k: v for k, v in denoising.items() if ".motion_modules." in k}
    if variant == "moore":
        denoising = {k: v for k, v in denoising.items() if ".motion_modules." not in k}
        for key in [k for k in motion if k.endswith("attention_blocks.0.to_q.weight")
                    or k.endswith("attention_blocks.1.to_q.weight")]:
            dim = motion[key].shape[0]
            motion[key.replace("to_q.weight", "pos_encoder.pe")] = position_encoding(trained_length, dim, "cpu",
                                                                                     torch.float32)[None]
        torch.save(motion, os.path.join(path, "motion_module.pth"))
    elif variant != "musepose":
        raise ValueError(f"unknown variant {variant!r}; valid: moore, musepose")
    torch.save(reference, os.path.join(path, "reference_unet.pth"))
    torch.save(denoising, os.path.join(path, "denoising_unet.pth"))
    torch.save(guider, os.path.join(path, "pose_guider.pth"))
    return path


def write_unianimate(path, dim=32, dim_mult=(1, 1, 1, 1), context_dim=64, head_dim=8, seed=0):
    """Write a UniAnimate UNet state dict with random weights to ``path`` (a file); returns ``path``."""
    from poseanimate.models.unianimate import UniAnimateConfig, UniAnimateUNet

    torch.manual_seed(seed)
    cfg = UniAnimateConfig(dim=dim, dim_mult=tuple(dim_mult), context_dim=context_dim, head_dim=head_dim)
    return _save(UniAnimateUNet(cfg).state_dict(), path)


def _random(shape, generator, std=0.02):
    return (torch.randn(shape, generator=generator) * std).half()


def _save(sd, path):
    """``.safetensors`` by name, else a pickled state dict (what a ``pytorch_model.bin`` holds)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, path)
    else:
        torch.save(sd, path)
    return path


def _clip_encoder(sd, prefix, layers, width, mlp, generator, norms):
    """Add the ``layers`` transformer layers of a CLIP encoder under ``prefix`` (transformers key names) to
    ``sd``, then every layer norm (``norms`` and the layers' own) as ones and zeros; returns ``sd``."""
    for i in range(layers):
        layer = f"{prefix}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{layer}.self_attn.{proj}.weight"] = _random((width, width), generator)
            sd[f"{layer}.self_attn.{proj}.bias"] = torch.zeros(width, dtype=torch.float16)
        sd[f"{layer}.mlp.fc1.weight"] = _random((mlp, width), generator)
        sd[f"{layer}.mlp.fc1.bias"] = torch.zeros(mlp, dtype=torch.float16)
        sd[f"{layer}.mlp.fc2.weight"] = _random((width, mlp), generator)
        sd[f"{layer}.mlp.fc2.bias"] = torch.zeros(width, dtype=torch.float16)
        norms = [*norms, f"{layer}.layer_norm1", f"{layer}.layer_norm2"]
    for norm in norms:
        sd[f"{norm}.weight"] = torch.ones(width, dtype=torch.float16)
        sd[f"{norm}.bias"] = torch.zeros(width, dtype=torch.float16)
    return sd


def write_clip_vision_vitl(path, seed=0):
    """CLIP ViT-L/14 (224 px, patch 14, width 1024, 24 layers, MLP 4096) + 768 projection."""
    g = torch.Generator().manual_seed(seed)
    width = 1024
    sd = {
        "vision_model.embeddings.class_embedding": _random((width,), g),
        "vision_model.embeddings.patch_embedding.weight": _random((width, 3, 14, 14), g),
        "vision_model.embeddings.position_embedding.weight": _random((257, width), g),
        "visual_projection.weight": _random((768, width), g),
    }
    norms = ["vision_model.pre_layrnorm", "vision_model.post_layernorm"]
    return _save(_clip_encoder(sd, "vision_model", 24, width, 4096, g, norms), path)


def write_clip_text_l(path, seed=0):
    """SD1.5's text encoder (CLIP ViT-L/14 text model, transformers key names) with random weights, fp16:
    ComfyUI's CLIPLoader (type stable_diffusion) fixes its size (vocabulary 49408, 77 positions, width 768,
    12 layers, MLP 3072)."""
    g = torch.Generator().manual_seed(seed)
    width = 768
    sd = {"text_model.embeddings.token_embedding.weight": _random((49408, width), g),
          "text_model.embeddings.position_embedding.weight": _random((77, width), g)}
    return _save(_clip_encoder(sd, "text_model", 12, width, 3072, g, ["text_model.final_layer_norm"]), path)


def write_sd_vae(path, seed=0):
    """An AutoencoderKL with Stable Diffusion's VAE shape, random weights, diffusers key names."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    blocks = 4
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * blocks,
                        up_block_types=("UpDecoderBlock2D",) * blocks)
    return _save({k: v.half().contiguous() for k, v in vae.state_dict().items()}, path)


def write_dwpose(folder):
    """``yolox_l.onnx`` boxing red pixels, ``dw-ll_ucoco_384.onnx`` placing :data:`SKELETON`
    (plus feet, face and hands around it) in every box."""
    from poseanimate.pose import standin

    os.makedirs(folder, exist_ok=True)
    points = np.zeros((133, 2))
    points[:17] = SKELETON
    points[17:23] = np.repeat(SKELETON[15:17], 3, axis=0) + [0.0, 0.03]
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points[23:91] = SKELETON[0] + 0.05 * np.stack([np.cos(angle), 1.3 * np.sin(angle)], axis=1)
    fan = np.stack([np.linspace(-0.04, 0.04, 21), np.linspace(0.01, 0.06, 21)], axis=1)
    points[91:112], points[112:133] = SKELETON[9] + fan, SKELETON[10] + fan
    bins_x = np.clip(np.round(points[:, 0] * standin.POSE_W * standin.SPLIT), 0, standin.POSE_W * 2 - 1).astype(int)
    bins_y = np.clip(np.round(points[:, 1] * standin.POSE_H * standin.SPLIT), 0, standin.POSE_H * 2 - 1).astype(int)
    standin.build_detector(os.path.join(folder, "yolox_l.onnx"), [standin.ChannelBox(2)])
    standin.build_pose_model(os.path.join(folder, "dw-ll_ucoco_384.onnx"), "fixed", bins_x=bins_x, bins_y=bins_y)
    return folder


def person_frames(count, width, height, box=(0.3, 0.15, 0.4, 0.75), sway=0.03, seed=0):
    """RGB uint8 ``[count, height, width, 3]``: dark noise and a red box (the stand-in's person)
    that sways sideways from frame to frame; ``box`` is (left, top, width, height) as fractions."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 50, (count, height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        left = int((box[0] + sway * np.sin(i)) * width)
        top = int(box[1] * height)
        frame[top:top + int(box[3] * height), left:left + int(box[2] * width)] = (230, 30, 30)
    return frames


_LDM_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
               "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}


def ldm_prefixes(levels=4, layers=2, attention=(True, True, True, False)):
    """diffusers -> original LDM prefixes of an SD1.x UNet, written out from the LDM layout
    (an independent table to check ``models.sd_checkpoint`` against)."""
    m = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
         "mid_block.resnets.1.": "middle_block.2."}
    k = 1
    for i in range(levels):
        for j in range(layers):
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{k}.0."
            if attention[i]:
                m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{k}.1."
            k += 1
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{k}.0.op."
            k += 1
    k = 0
    for i in range(levels):
        att = attention[levels - 1 - i]
        for j in range(layers + 1):
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{k}.0."
            if att:
                m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{k}.1."
            if j == layers and i < levels - 1:
                m[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{k}.{2 if att else 1}.conv."
            k += 1
    return m


def diffusers_to_ldm(sd):
    """A diffusers SD1.x UNet state dict under its single-file checkpoint names (``model.diffusion_model.*``)."""
    prefixes = ldm_prefixes()
    out = {}
    for key, value in sd.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len)
        rest = key[len(prefix):]
        if ".resnets." in prefix:
            old = next(o for o in _LDM_RESNET if rest.startswith(o))
            rest = _LDM_RESNET[old] + rest[len(old):]
        out["model.diffusion_model." + prefixes[prefix] + rest] = value
    return out


def write_magicanimate_folder(path, width=32, cross_attention_dim=768, seed=0, unet="diffusers",
                              dtype=torch.float32, spatial_in_motion=False):
    """A MagicAnimate folder as released (``appearance_encoder/``, ``densepose_controlnet/``,
    ``temporal_attention/temporal_attention.ckpt``) plus the SD1.5 UNet: ``unet="diffusers"`` (a
    ``unet/`` folder), ``"ldm"`` (a single-file checkpoint ``v1-5-pruned-emaonly.safetensors``, with
    stand-in VAE and text-encoder keys) or ``None``. Widths ``(width, width, width, 2 * width)`` so the
    deepest level has more channels than GroupNorm groups (the timestep matters)."""
    import json

    from poseanimate.models.controlnet import ControlNet
    from poseanimate.models.magicanimate import appearance_encoder
    from poseanimate.models.motion_module import position_encoding
    from poseanimate.models.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    cfg = UNetConfig(block_out_channels=(width, width, width, 2 * width), cross_attention_dim=cross_attention_dim)
    denoising = UNet(UNetConfig(**{**cfg.__dict__, "motion_modules": True, "motion_mid": False})).state_dict()
    encoder = appearance_encoder(cfg).state_dict()
    control = ControlNet(cfg, (16, 32, 96, 256)).state_dict()
    for value in [*denoising.values(), *control.values()]:  # zero-initialised layers random too: every part counts
        if value.ndim > 1 and value.abs().max() == 0:
            value.normal_(0, 0.05)
    cast = {torch.float32: lambda sd: sd, torch.float16: lambda sd: {k: v.half() for k, v in sd.items()}}[dtype]
    motion = {k: v for k, v in denoising.items() if ".motion_modules." in k}
    for key in [k for k in motion if k.endswith(("attention_blocks.0.to_q.weight", "attention_blocks.1.to_q.weight"))]:
        motion[key.replace("to_q.weight", "pos_encoder.pe")] = position_encoding(24, motion[key].shape[0], "cpu",
                                                                                 torch.float32)[None]
    spatial = {k: v for k, v in denoising.items() if ".motion_modules." not in k}
    if spatial_in_motion:
        motion.update(spatial)
    ext = ".safetensors" if dtype == torch.float16 else ".bin"
    config = dict(block_out_channels=list(cfg.block_out_channels), cross_attention_dim=cross_attention_dim,
                  layers_per_block=2, attention_head_dim=8)
    for folder, name, sd in (("appearance_encoder", "AppearanceEncoderModel", encoder),
                             ("densepose_controlnet", "ControlNetModel", control)):
        _save(cast(sd), os.path.join(path, folder, "diffusion_pytorch_model.safetensors"))
        with open(os.path.join(path, folder, "config.json"), "w") as f:
            json.dump({"_class_name": name, **config}, f)
    _save(cast(motion), os.path.join(path, "temporal_attention", "temporal_attention.ckpt"))
    if unet == "diffusers":
        _save(cast(spatial), os.path.join(path, "unet", "diffusion_pytorch_model" + ext))
        with open(os.path.join(path, "unet", "config.json"), "w") as f:
            json.dump({"_class_name": "UNet2DConditionModel", **config}, f)
    elif unet == "ldm":
        single = diffusers_to_ldm(cast(spatial))
        single["first_stage_model.encoder.conv_in.weight"] = torch.zeros(8, 3, 3, 3)
        single["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        _save(single, os.path.join(path, "v1-5-pruned-emaonly.safetensors"))
    elif unet is not None:
        raise ValueError(f"unknown unet format {unet!r}; valid: diffusers, ldm, None")
    return path
