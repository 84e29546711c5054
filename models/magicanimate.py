"""Loading MagicAnimate (magic-research/magic-animate) as released, plus the SD1.5 UNet it builds on.

A model folder holds (names as in the release; files are recognised by their keys):

    appearance_encoder/    config.json + diffusion_pytorch_model.safetensors (or .bin)
    densepose_controlnet/  config.json + diffusion_pytorch_model.safetensors (or .bin)
    temporal_attention/    temporal_attention.ckpt (motion modules; possibly also the spatial UNet)
    unet/                  stable-diffusion-v1-5's diffusers UNet folder, or instead
    <any name>.safetensors a single-file SD1.5 checkpoint (model.diffusion_model.* keys)

The networks are the pack's: the appearance encoder is the UNet that records its self-attention
inputs (the release drops everything of its last transformer block but ``norm1``, and its output
layers); the denoising UNet is the SD1.5 UNet with the motion modules loaded over it (no mid-block
module, GroupNorm of resnets and output pooled over a window's frames, like MagicAnimate's 3D UNet);
the ControlNet is :class:`~.controlnet.ControlNet`.
"""

import json
import logging
import os
from dataclasses import dataclass, field, replace

import torch

from . import sd_checkpoint
from .controlnet import ControlNet
from .loading import (WEIGHT_EXTENSIONS, CheckpointError, FamilyModels, _check_position_encodings, _load_into,
                      _pe_length, detect_role, get_device, get_dtype, read_state_dict, unet_config)
from .unet import UNet

log = logging.getLogger(__name__)

FAMILY = "magicanimate"
ROLES = ("appearance_encoder", "controlnet", "motion_module", "unet")
FOLDERS = {"appearance_encoder": "appearance_encoder", "densepose_controlnet": "controlnet",
           "temporal_attention": "motion_module", "unet": "unet"}
RELEASE = "https://huggingface.co/zcxu-eric/MagicAnimate"
SD15 = "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5"
DOWNLOADS = {
    "appearance_encoder": f"{RELEASE}/tree/main/appearance_encoder (config.json, diffusion_pytorch_model.safetensors)",
    "controlnet": f"{RELEASE}/tree/main/densepose_controlnet (config.json, diffusion_pytorch_model.safetensors)",
    "motion_module": f"{RELEASE}/tree/main/temporal_attention (temporal_attention.ckpt)",
    "unet": f"{SD15}/tree/main/unet (config.json, diffusion_pytorch_model.safetensors) into unet/, or a single-file "
            "SD1.5 checkpoint such as v1-5-pruned-emaonly.safetensors",
}
EXPECTED = {
    "appearance_encoder": "MagicAnimate's appearance encoder (an SD1.5 UNet without conv_out)",
    "controlnet": "MagicAnimate's DensePose ControlNet (controlnet_cond_embedding.* keys)",
    "motion_module": "MagicAnimate's temporal attention (*.motion_modules.* keys)",
    "unet": "the Stable Diffusion 1.5 UNet (diffusers unet/ folder or a single-file checkpoint)",
}
# Preferred weight names in a diffusers folder (stable-diffusion-v1-5's unet/ also holds non-EMA copies).
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
TRAINED_LENGTH = 24


@dataclass
class MagicAnimateModels(FamilyModels):
    appearance_encoder: UNet
    denoising_unet: UNet
    controlnet: ControlNet
    trained_length: int = TRAINED_LENGTH
    files: dict = field(default_factory=dict)
    family: str = FAMILY


class _NormOnly(torch.nn.Module):
    """What the release keeps of the appearance encoder's last transformer block: ``norm1``, whose
    output is recorded; nothing after it is ever used."""

    def __init__(self, block):
        super().__init__()
        self.norm1, self.index = block.norm1, block.index

    def forward(self, x, context, state):
        if state.capture is not None:
            state.capture[self.index] = self.norm1(x)
        return x


def appearance_encoder(cfg, **kw):
    """The appearance encoder: a UNet without output layers whose last transformer block only records."""
    net = UNet(replace(cfg, has_output=False, motion_modules=False), **kw)
    last = net.up_blocks[-1].attentions[-1]
    last.transformer_blocks[0] = _NormOnly(last.transformer_blocks[0])
    last.proj_out = torch.nn.Identity()
    return net


def is_magicanimate_folder(path):
    """A folder laid out like the release (one of its three subfolders)."""
    if isinstance(path, dict) or not os.path.isdir(path):
        return False
    names = set(os.listdir(path))
    return bool(names & {"appearance_encoder", "densepose_controlnet", "temporal_attention"})


def _keys(path):
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                return set(f.keys())
        except Exception as e:  # safetensors raises its own SafetensorError for a truncated header
            size = os.path.getsize(path)
            raise CheckpointError(f"{path} ({size / 2**20:.1f} MiB) could not be read as a safetensors file: {e}. "
                                  "A truncated or interrupted download looks like this: delete the file and "
                                  "download it again.") from e
    return set(read_state_dict(path))


def _read(path, prefix=None):
    """A state dict; with ``prefix`` only the keys starting with it (a single-file checkpoint's UNet)."""
    if prefix and path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    sd = read_state_dict(path)
    return {k: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd


def role_of(keys):
    """One of ROLES from a file's keys, or None."""
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        return "controlnet"
    if any(".motion_modules." in k for k in keys):
        return "motion_module"
    if sd_checkpoint.is_ldm_unet(keys):
        return "unet"
    if "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys:
        return "unet" if "conv_out.weight" in keys else "appearance_encoder"
    return None


def _candidates(folder):
    """``[(path, role expected from the folder name or None)]``: the folder's weight files and, per
    subfolder, its diffusers weights (the preferred name) or its weight files."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name.lower().endswith(WEIGHT_EXTENSIONS):
            out.append((path, None))
        elif os.path.isdir(path) and not name.startswith("."):
            files = [f for f in sorted(os.listdir(path)) if f.lower().endswith(WEIGHT_EXTENSIONS)]
            preferred = [f for f in DIFFUSERS_WEIGHTS if f in files]
            for f in preferred[:1] or files:
                out.append((os.path.join(path, f), FOLDERS.get(name)))
    return out


def _fail(path, role, found):
    return CheckpointError(f"{path}: expected {EXPECTED[role]}, but it looks like {found}. "
                           f"Download it from {DOWNLOADS[role]}.")


def find_files(folder):
    """``{role: path}`` for a MagicAnimate model folder; raises CheckpointError naming what is missing."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"model folder {folder} does not exist")
    found = {}
    for path, expected in _candidates(folder):
        try:
            keys = _keys(path)
        except CheckpointError as e:
            if expected is None:
                raise
            raise CheckpointError(f"{e} It should be {EXPECTED[expected]}: {DOWNLOADS[expected]}.") from e
        role = role_of(keys)
        if expected == "appearance_encoder" and role == "unet":
            role = expected  # saved with its (unused) output layers
        if expected is not None and role != expected:
            raise _fail(path, expected, detect_role(dict.fromkeys(keys)) if role is None else f"the {role} file")
        if role is None:
            continue
        if role in found:
            if role == "unet" and os.path.basename(os.path.dirname(path)) != "unet" \
                    and os.path.basename(os.path.dirname(found[role])) == "unet":
                log.info("PoseAnimate: using %s, not the single-file checkpoint %s", found[role], path)
                continue
            raise CheckpointError(f"{found[role]} and {path} are both {EXPECTED[role]}; keep only one of them "
                                  f"in {folder}.")
        found[role] = path
    needed = [r for r in ROLES if r not in found and r != "unet"]
    if needed:
        raise CheckpointError(f"model folder {folder} has no {', '.join(EXPECTED[r] for r in needed)}. "
                              f"Download: {'; '.join(DOWNLOADS[r] for r in needed)}.")
    return found


def _config_json(path):
    config = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.isfile(config):
        return {}
    try:
        with open(config, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config} is not readable JSON ({e}); download it again from the same place as "
                              f"{os.path.basename(path)}.") from e


def _strip(sd):
    """The reference's motion-module loader: ``module.`` / ``unet.`` prefixes dropped."""
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "unet."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def build_models(files, *, device=None, dtype=None, operations=torch.nn):
    """Build the three networks from ``{role: path}`` (see :func:`find_files`)."""
    device = get_device(device)
    dtype = get_dtype(dtype, device)
    motion_path = files["motion_module"]
    motion_sd = _strip(read_state_dict(motion_path))
    _check_position_encodings(motion_sd, motion_path)
    trained = _pe_length(motion_sd) or TRAINED_LENGTH
    motion_sd = {k: v for k, v in motion_sd.items() if not k.endswith(".pos_encoder.pe")}

    unet_path = files.get("unet")
    if unet_path is None:
        base, spatial_from = {}, motion_path
    elif sd_checkpoint.is_ldm_unet(_keys(unet_path)):
        try:
            base = sd_checkpoint.unet_to_diffusers(_read(unet_path, sd_checkpoint.PREFIX))
        except ValueError as e:
            raise _fail(unet_path, "unet", f"another model ({e})") from e
        spatial_from = unet_path
    else:
        base, spatial_from = read_state_dict(unet_path), unet_path
    den_sd = {**base, **motion_sd}  # spatial keys in the temporal_attention file win, as in the reference
    if "conv_out.weight" not in den_sd:
        raise CheckpointError(f"no Stable Diffusion 1.5 UNet: {motion_path} holds only motion modules and the folder "
                              f"has no unet/ folder or single-file SD1.5 checkpoint. Download {DOWNLOADS['unet']}.")
    den_name = spatial_from if spatial_from == motion_path else f"{spatial_from} + {motion_path}"
    den_cfg = replace(unet_config(den_sd, motion_modules=True, has_output=True), video_norm=True,
                      motion_mid=any(k.startswith("mid_block.motion_modules.") for k in den_sd))

    app_path = files["appearance_encoder"]
    app_sd = read_state_dict(app_path)
    app_cfg = unet_config(app_sd, motion_modules=False, has_output=False)
    ctrl_path = files["controlnet"]
    ctrl_sd = read_state_dict(ctrl_path)
    ctrl_cfg = unet_config(ctrl_sd, motion_modules=False, has_output=False)
    for path, cfg in ((app_path, app_cfg), (ctrl_path, ctrl_cfg)):
        if (cfg.block_out_channels, cfg.cross_attention_dim) != (den_cfg.block_out_channels, den_cfg.cross_attention_dim):
            raise CheckpointError(f"{path} (widths {cfg.block_out_channels}, context {cfg.cross_attention_dim}) does not "
                                  f"fit the UNet {den_name} (widths {den_cfg.block_out_channels}, context "
                                  f"{den_cfg.cross_attention_dim}); use MagicAnimate's files with SD1.5.")
    blocks = sorted({int(k.split(".")[2]) for k in ctrl_sd if k.startswith("controlnet_cond_embedding.blocks.")})
    cond_channels = (ctrl_sd["controlnet_cond_embedding.conv_in.weight"].shape[0],)
    cond_channels += tuple(ctrl_sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in blocks[1::2])
    order = _config_json(ctrl_path).get("controlnet_conditioning_channel_order", "rgb")

    meta = dict(device="meta", operations=operations)
    encoder = appearance_encoder(app_cfg, **meta)
    denoising = UNet(den_cfg, **meta)
    controlnet = ControlNet(ctrl_cfg, cond_channels,
                            ctrl_sd["controlnet_cond_embedding.conv_in.weight"].shape[1], bgr=order == "bgr", **meta)
    kept = encoder.state_dict().keys()
    unused = (f"up_blocks.{len(encoder.up_blocks) - 1}.attentions.{len(encoder.up_blocks[-1].attentions) - 1}.",
              "conv_norm_out.", "conv_out.")
    app_sd = {k: v for k, v in app_sd.items() if k in kept or not k.startswith(unused)}
    for net, sd, path, role in ((encoder, app_sd, app_path, "appearance_encoder"),
                                (denoising, den_sd, den_name, "unet"), (controlnet, ctrl_sd, ctrl_path, "controlnet")):
        try:
            _load_into(net, sd, path, role)
        except CheckpointError as e:
            raise CheckpointError(f"{e} Expected {EXPECTED[role]}; download: {DOWNLOADS[role]}.") from e
    nets = [m.to(device=device, dtype=dtype).eval().requires_grad_(False) for m in (encoder, denoising, controlnet)]
    log.info("PoseAnimate: loaded MagicAnimate models (%s, %s)", device, dtype)
    return MagicAnimateModels(*nets, trained_length=trained, files=dict(files))


def load_models(path, device=None, dtype=None, operations=torch.nn):
    """Load MagicAnimate from a model folder (see the module docstring)."""
    return build_models(find_files(path), device=device, dtype=dtype, operations=operations)
