"""Loading the released Animate Anyone (Moore-AnimateAnyone) and MusePose checkpoints unchanged.

A model folder holds a ReferenceNet, a denoising UNet, a PoseGuider and, for Moore, a separate
motion-module file (MusePose keeps the motion modules inside its denoising UNet). Files are
recognised by their keys, not their names; widths are read from tensor shapes, so tiny test
networks and the 3.4 GB releases take the same path. Every file is read once (memory-mapped).
"""

import logging
import os
import pickle
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import torch

from .motion_module import position_encoding
from .pose_guider import PoseGuider
from .unet import UNet, UNetConfig

log = logging.getLogger(__name__)

ROLES = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")
WEIGHT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DOWNLOADS = {
    "moore": "https://huggingface.co/patrolli/AnimateAnyone (reference_unet.pth, denoising_unet.pth, "
             "motion_module.pth, pose_guider.pth)",
    "musepose": "https://huggingface.co/TMElyralab/MusePose/tree/main/MusePose (reference_unet.pth, "
                "denoising_unet.pth, motion_module.pth, pose_guider.pth)",
}
TRAINED_LENGTH = {"moore": 24, "musepose": 128}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_PE_SUFFIX = ".pos_encoder.pe"


class CheckpointError(ValueError):
    """A model file is missing, unreadable or not the network it should be. ``problem`` says what is
    wrong, ``fix`` (optional) where to get the right files; the message is both."""

    def __init__(self, problem, fix=None):
        super().__init__(f"{problem} {fix}" if fix else problem)
        self.problem, self.fix = problem, fix


class FamilyModels:
    """The base of every family's loaded networks (a dataclass with ``family``, ``trained_length`` and
    ``files``): ``device`` and ``dtype`` are those of ``main_weight``, a weight of the network every step
    runs, and ``embed_dim`` is the width of its condition tokens. The defaults read a ``denoising_unet``
    (:class:`~.unet.UNet`); a family with another network overrides both."""

    @property
    def main_weight(self):
        return self.denoising_unet.conv_in.weight

    @property
    def embed_dim(self):
        return self.denoising_unet.config.cross_attention_dim

    @property
    def device(self):
        return self.main_weight.device

    @property
    def dtype(self):
        return self.main_weight.dtype


@dataclass
class AnimateModels(FamilyModels):
    reference_net: UNet
    denoising_unet: UNet
    pose_guider: PoseGuider
    variant: str
    trained_length: int
    files: dict = field(default_factory=dict)

    @property
    def family(self):
        return self.variant


def _read_errors():
    from safetensors import SafetensorError

    return (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, SafetensorError)


READ_ERRORS = _read_errors()


def first_line(text, limit=200):
    """The first sentence of an error message that is not torch's advice about ``weights_only``,
    without its final full stop."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip() and "weights_only" not in line]
    line = re.split(r"(?<=\.)\s", lines[0])[0].rstrip(".") if lines else type(text).__name__
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " \u2026"


def unreadable_reason(error, subject="the file"):
    """Why a weights file could not be read, in one clause: a pickle that holds code (refused: loading
    it could run that code) or a damaged file (the usual result of an interrupted download)."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"{subject} is a pickle that holds code{what}, not only tensors, and is refused because loading it "
                "could run that code; use the file of the official release, or a .safetensors version of it")
    return (f"{subject} is damaged or incomplete ({first_line(text)}); an interrupted download looks like this: "
            "delete it and download it again")


def read_state_dict(path):
    """Read a ``.safetensors`` or pickled (``weights_only``) state dict, memory-mapped where possible."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as e:
        size = os.path.getsize(path)
        raise CheckpointError(f"{path} ({size / 2**20:.1f} MiB) could not be read as a state dict: "
                              f"{unreadable_reason(e)}.") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(sd).__name__}).")
    return sd


def detect_role(sd):
    """What a state dict is, from its keys: one of ROLES, or a description of what it is instead."""
    keys = sd.keys()
    has_motion = any(".motion_modules." in k for k in keys)
    if "conv_in.weight" in sd and "time_embedding.linear_1.weight" in sd:
        if has_motion:
            return "denoising_unet"
        return "denoising_unet" if "conv_out.weight" in sd else "reference_unet"
    if has_motion:
        return "motion_module"
    if "conv_in.weight" in sd and any(k.startswith("blocks.") for k in keys) and "conv_out.weight" in sd:
        return "pose_guider"
    if "dwpose_embedding.0.weight" in sd and "input_blocks.0.0.weight" in sd:
        return "a UniAnimate UNet (load its folder on its own: the family is recognised from it)"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "an original-format Stable Diffusion checkpoint (model.diffusion_model.*)"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "a VAE"
    if any(k.startswith("vision_model.") for k in keys):
        return "a CLIP vision encoder"
    return f"an unknown model (first keys: {', '.join(list(keys)[:3])})"


def find_model_files(folder):
    """Map each role to a file in ``folder``, recognising files by their keys. Returns
    ``{role: (path, state_dict)}``; raises CheckpointError naming what is missing."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"model folder {folder} does not exist")
    found, others = {}, []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.lower().endswith(WEIGHT_EXTENSIONS) or not os.path.isfile(path):
            continue
        sd = read_state_dict(path)
        role = detect_role(sd)
        if role not in ROLES:
            others.append(f"{name}: {role}")
            continue
        if role in found:
            role = _disambiguate(role, found[role][0], path)
        found[role] = (path, sd)
    missing = [r for r in ROLES if r not in found and r != "motion_module"]
    if missing:
        extra = f" Other files there: {'; '.join(others)}." if others else ""
        raise CheckpointError(
            f"model folder {folder} has no {', '.join(missing)} file.{extra}",
            f"Put the four files of one release in it: Animate Anyone from {DOWNLOADS['moore']}, or MusePose from "
            f"{DOWNLOADS['musepose']}.")
    return found


def _disambiguate(role, first, second):
    names = {os.path.basename(p).lower(): p for p in (first, second)}
    if role == "denoising_unet" and any("reference" in n for n in names):
        return "reference_unet"
    raise CheckpointError(f"{first} and {second} both look like a {role} file; keep only one of them in the folder.")


def _summarise(keys, limit=4):
    groups = Counter(re.sub(r"\.\d+(?=\.|$)", ".*", k).split(".transformer_blocks")[0].rsplit(".", 1)[0] for k in keys)
    parts = [f"{n} under {g}" for g, n in groups.most_common(limit)]
    more = len(groups) - limit
    return "; ".join(parts) + (f"; and {more} more groups" if more > 0 else "") + f" (e.g. {sorted(keys)[0]})"


def _load_into(model, sd, path, role):
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = expected.keys() - sd.keys()
    unexpected = sd.keys() - expected.keys()
    if missing or unexpected:
        found = detect_role(sd)
        what = f"it looks like {found}" if found != role else "its keys do not match"
        msg = [f"{path} is not a usable {role} file: {what}."]
        if missing:
            msg.append(f"Missing {len(missing)} keys: {_summarise(missing)}.")
        if unexpected:
            msg.append(f"Unexpected {len(unexpected)} keys: {_summarise(unexpected)}.")
        raise CheckpointError(" ".join(msg))
    bad = [k for k, shape in expected.items() if sd[k].shape != shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: {len(bad)} tensors have unexpected shapes for a {role} "
                              f"(e.g. {k}: {tuple(sd[k].shape)}, expected {tuple(expected[k])}).")
    model.load_state_dict(sd, strict=True, assign=True)


def unet_config(sd, *, motion_modules, has_output):
    down = sorted({int(m.group(1)) for k in sd if (m := re.match(r"down_blocks\.(\d+)\.resnets\.0\.conv1\.weight$", k))})
    if not down or "conv_in.weight" not in sd:
        raise CheckpointError("not a UNet state dict (no conv_in / down_blocks)")
    channels = tuple(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in down)
    layers = len({k.split(".")[3] for k in sd if k.startswith("down_blocks.0.resnets.")})
    attention = tuple(f"down_blocks.{i}.attentions.0.norm.weight" in sd for i in down)
    attn2 = next((v for k, v in sd.items() if k.endswith("attn2.to_k.weight")), None)
    if attn2 is None:
        raise CheckpointError("not a Stable Diffusion UNet state dict (no cross-attention layers)")
    return UNetConfig(
        block_out_channels=channels,
        in_channels=sd["conv_in.weight"].shape[1],
        out_channels=sd["conv_out.weight"].shape[0] if "conv_out.weight" in sd else 4,
        cross_attention_dim=attn2.shape[1],
        layers_per_block=layers,
        attention_blocks=attention,
        motion_modules=motion_modules,
        has_output=has_output,
    )


def _check_position_encodings(sd, path):
    for k in [k for k in sd if k.endswith(_PE_SUFFIX)]:
        pe = sd[k]
        expected = position_encoding(pe.shape[-2], pe.shape[-1], "cpu", torch.float32)
        atol = max(1e-4, 2 * torch.finfo(pe.dtype).eps) if pe.is_floating_point() else 0
        if pe.shape[-1] % 2 or not torch.allclose(pe.float().reshape(expected.shape), expected, atol=atol):
            raise CheckpointError(f"{path}: {k} is not AnimateDiff's sinusoidal position encoding; "
                                  "this is not an Animate Anyone / AnimateDiff v2 motion module.")


def _pe_length(sd):
    return max((v.shape[-2] for k, v in sd.items() if k.endswith(_PE_SUFFIX)), default=None)


def resolve_files(path):
    """``path`` is a folder or a dict ``role -> file``; returns ``{role: (file, state_dict)}``."""
    if isinstance(path, dict):
        unknown = set(path) - set(ROLES)
        if unknown:
            raise CheckpointError(f"unknown model roles {sorted(unknown)}; valid roles: {', '.join(ROLES)}")
        missing = [r for r in ROLES if r != "motion_module" and not path.get(r)]
        if missing:
            raise CheckpointError(f"no file given for {', '.join(missing)} (roles: {', '.join(ROLES)})")
        return {role: (os.fspath(p), read_state_dict(p)) for role, p in path.items() if p}
    return find_model_files(path)


def build_models(files, *, device=None, dtype=None, operations=torch.nn):
    """Build the three networks from ``{role: (file, state_dict)}`` (see :func:`resolve_files`)."""
    device = get_device(device)
    dtype = get_dtype(dtype, device)
    ref_path, ref_sd = files["reference_unet"]
    den_path, den_sd = files["denoising_unet"]
    guide_path, guide_sd = files["pose_guider"]
    mm_path, mm_sd = files.get("motion_module", (None, {}))

    # A ReferenceNet saved with its (unused) output layers reads as a plain 2D UNet: accept it.
    accepted = {"reference_unet": ("reference_unet", "denoising_unet"), "denoising_unet": ("denoising_unet",),
                "pose_guider": ("pose_guider",), "motion_module": ("motion_module",)}
    for role, (path, sd) in files.items():
        found = detect_role(sd)
        if found not in accepted[role] or (role == "reference_unet" and any(".motion_modules." in k for k in sd)):
            raise CheckpointError(f"{path} was given as the {role} file, but it looks like {found}.")

    inside = {k: v for k, v in den_sd.items() if ".motion_modules." in k}
    variant = "musepose" if inside else "moore"
    if inside and mm_path:
        same = mm_sd.keys() == inside.keys() and all(mm_sd[k].shape == v.shape for k, v in inside.items())
        (log.info if same else log.warning)(
            "PoseAnimate: %s is not used: %s carries its own motion modules (MusePose), which are used%s",
            mm_path, den_path, "" if same else " (the file's motion modules have other keys or shapes)")
        files = {role: f for role, f in files.items() if role != "motion_module"}
        mm_path, mm_sd = None, {}
    motion = inside or {k: v for k, v in mm_sd.items() if ".motion_modules." in k}
    if not motion:
        raise CheckpointError(
            f"no motion modules: {den_path} has none inside and no motion_module file was found.",
            f"Animate Anyone ships them as motion_module.pth: {DOWNLOADS['moore']}.")
    _check_position_encodings(mm_sd, mm_path)
    _check_position_encodings(inside, den_path)
    trained = TRAINED_LENGTH["musepose"] if variant == "musepose" else (_pe_length(mm_sd) or TRAINED_LENGTH["moore"])
    spatial = {k: v for k, v in den_sd.items() if ".motion_modules." not in k}
    den_full = {**spatial, **{k: v for k, v in motion.items() if not k.endswith(_PE_SUFFIX)}}
    ref_sd = {k: v for k, v in ref_sd.items() if not k.startswith(("conv_norm_out.", "conv_out."))}

    ref_cfg = unet_config(ref_sd, motion_modules=False, has_output=False)
    den_cfg = unet_config(den_full, motion_modules=True, has_output=True)
    if (ref_cfg.block_out_channels, ref_cfg.cross_attention_dim) != (den_cfg.block_out_channels, den_cfg.cross_attention_dim):
        raise CheckpointError(
            f"{ref_path} (widths {ref_cfg.block_out_channels}) and {den_path} (widths {den_cfg.block_out_channels}) "
            "are not from the same model; use the four files of one release.")
    n_blocks = len({k.split(".")[1] for k in guide_sd if k.startswith("blocks.")})
    channels = (guide_sd["conv_in.weight"].shape[0],)
    channels += tuple(guide_sd[f"blocks.{i}.weight"].shape[0] for i in range(1, n_blocks, 2))
    guide_out = guide_sd["conv_out.weight"].shape[0]
    if guide_out != den_cfg.block_out_channels[0]:
        raise CheckpointError(f"{guide_path}: the PoseGuider outputs {guide_out} channels but the UNet's conv_in "
                              f"has {den_cfg.block_out_channels[0]}; the files are from different models.")

    meta = dict(device="meta", operations=operations)
    reference = UNet(ref_cfg, **meta)
    denoising = UNet(den_cfg, **meta)
    guider = PoseGuider(channels, guide_out, guide_sd["conv_in.weight"].shape[1], **meta)
    _load_into(reference, ref_sd, ref_path, "reference_unet")
    _load_into(denoising, den_full, den_path if not mm_path else f"{den_path} + {mm_path}", "denoising_unet")
    _load_into(guider, guide_sd, guide_path, "pose_guider")
    models = [m.to(device=device, dtype=dtype).eval().requires_grad_(False) for m in (reference, denoising, guider)]
    log.info("PoseAnimate: loaded %s models (%s, %s)", variant, device, dtype)
    return AnimateModels(*models, variant=variant, trained_length=trained,
                         files={role: p for role, (p, _) in files.items()})


def load_models(path, device=None, dtype=None, operations=torch.nn):
    """Load the networks from a model folder or a dict ``role -> file``.

    Roles: ``reference_unet``, ``denoising_unet``, ``pose_guider`` and optional ``motion_module``.
    ``device``: a torch.device or its name, default (or "auto") CUDA when available; ``dtype``: a
    torch.dtype or "fp16", "bf16", "fp32", default (or "auto") float16 on GPUs, float32 on the CPU.
    A folder laid out like MagicAnimate's release loads that family (:mod:`.magicanimate`).
    """
    device = get_device(device)
    dtype = get_dtype(dtype, device)
    from . import magicanimate

    if magicanimate.is_magicanimate_folder(path):
        return magicanimate.load_models(path, device=device, dtype=dtype, operations=operations)
    if not isinstance(path, dict) and os.path.isdir(path):
        from .unianimate import find_unianimate_file, load_unianimate

        found = find_unianimate_file(path)
        if found is not None:
            return load_unianimate(found[0], device=device, dtype=dtype, operations=operations)
    return build_models(resolve_files(path), device=device, dtype=dtype, operations=operations)


def default_device():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_problem(device):
    """Why torch cannot compute on ``device`` (a torch.device) here, or None."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU here; use the CPU ('cpu')"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "torch has no MPS (Apple GPU) support here; use the CPU ('cpu')"
    return None


def get_device(device=None, option=None):
    """A torch.device from a name or torch.device; None or "auto": CUDA when available, else the CPU.
    Raises ValueError when torch does not know it or cannot use it here; ``option`` (e.g. ``--device``):
    the command-line option the messages name instead of the argument."""
    if device is None or device == "auto":
        return default_device()

    def named(value):
        return f"{option} {value}" if option else f"device {str(value)!r}"

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        choices = "cpu, cuda or cuda:N" if option else "'cpu', 'cuda' or 'cuda:N'"
        raise ValueError(f"{named(device)} is not a device torch knows ({e}); use {choices}") from e
    problem = device_problem(parsed)
    if problem:
        if option:
            problem = problem.replace("('cpu')", f"({option} cpu)")
        raise ValueError(f"{named(parsed)}: {problem}")
    return parsed


def get_dtype(dtype, device):
    """A floating-point torch.dtype from a name of DTYPES, a torch.dtype, or None/"auto" (float16 on
    GPUs, float32 on the CPU). Raises ValueError naming the valid choices."""
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype {dtype!r} is not valid; valid choices: 'auto', {', '.join(map(repr, DTYPES))} "
                     "or a floating-point torch.dtype")


def default_dtype(device):
    return torch.float32 if torch.device(device).type == "cpu" else torch.float16
