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


def write_clip_vision_vitl(path, seed=0):
    """CLIP ViT-L/14 (224 px, patch 14, width 1024, 24 layers, MLP 4096) + 768 projection."""
    g = torch.Generator().manual_seed(seed)
    width, mlp = 1024, 4096
    sd = {
        "vision_model.embeddings.class_embedding": _random((width,), g),
        "vision_model.embeddings.patch_embedding.weight": _random((width, 3, 14, 14), g),
        "vision_model.embeddings.position_embedding.weight": _random((257, width), g),
        "visual_projection.weight": _random((768, width), g),
    }
    norms = ["vision_model.pre_layrnorm", "vision_model.post_layernorm"]
    for i in range(24):
        layer = f"vision_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{layer}.self_attn.{proj}.weight"] = _random((width, width), g)
            sd[f"{layer}.self_attn.{proj}.bias"] = torch.zeros(width, dtype=torch.float16)
        sd[f"{layer}.mlp.fc1.weight"] = _random((mlp, width), g)
        sd[f"{layer}.mlp.fc1.bias"] = torch.zeros(mlp, dtype=torch.float16)
        sd[f"{layer}.mlp.fc2.weight"] = _random((width, mlp), g)
        sd[f"{layer}.mlp.fc2.bias"] = torch.zeros(width, dtype=torch.float16)
        norms += [f"{layer}.layer_norm1", f"{layer}.layer_norm2"]
    for norm in norms:
        sd[f"{norm}.weight"] = torch.ones(width, dtype=torch.float16)
        sd[f"{norm}.bias"] = torch.zeros(width, dtype=torch.float16)
    return _save(sd, path)


def write_clip_text_l(path, seed=0):
    """CLIP ViT-L/14 text model: vocabulary 49408, 77 positions, width 768, 12 layers, MLP 3072."""
    g = torch.Generator().manual_seed(seed)
    width, mlp = 768, 3072
    sd = {
        "text_model.embeddings.token_embedding.weight": _random((49408, width), g),
        "text_model.embeddings.position_embedding.weight": _random((77, width), g),
    }
    norms = ["text_model.final_layer_norm"]
    for i in range(12):
        layer = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{layer}.self_attn.{proj}.weight"] = _random((width, width), g)
            sd[f"{layer}.self_attn.{proj}.bias"] = torch.zeros(width, dtype=torch.float16)
        sd[f"{layer}.mlp.fc1.weight"] = _random((mlp, width), g)
        sd[f"{layer}.mlp.fc1.bias"] = torch.zeros(mlp, dtype=torch.float16)
        sd[f"{layer}.mlp.fc2.weight"] = _random((width, mlp), g)
        sd[f"{layer}.mlp.fc2.bias"] = torch.zeros(width, dtype=torch.float16)
        norms += [f"{layer}.layer_norm1", f"{layer}.layer_norm2"]
    for norm in norms:
        sd[f"{norm}.weight"] = torch.ones(width, dtype=torch.float16)
        sd[f"{norm}.bias"] = torch.zeros(width, dtype=torch.float16)
    return _save(sd, path)


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
