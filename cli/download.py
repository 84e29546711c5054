"""The models folder (one layout for the command line and the ComfyUI nodes) and downloading into it.

    MODELS/animate_anyone/<variant>/{reference_unet,denoising_unet,motion_module,pose_guider}.pth
    MODELS/animate_anyone/magicanimate/{appearance_encoder,densepose_controlnet,temporal_attention,unet}/...
    MODELS/text_encoders/stable-diffusion-v1-5/{config.json,model.safetensors,tokenizer/}   (MagicAnimate)
    MODELS/dwpose/{yolox_l.onnx,dw-ll_ucoco_384.onnx}
    MODELS/densepose/densepose_r50_fpn_dl.torchscript                  (MagicAnimate's control images)
    MODELS/vae/sd-vae-ft-mse/{config.json,diffusion_pytorch_model.safetensors}
    MODELS/clip_vision/sd-image-variations-image-encoder/{config.json,pytorch_model.bin}

UniAnimate (``--variant unianimate``; the same files are on ModelScope as ``iic/unianimate``):

    MODELS/animate_anyone/unianimate/unianimate_16f_32f_non_ema_223000.pth
    MODELS/checkpoints/v2-1_512-ema-pruned.ckpt        (SD2.1: its VAE; ComfyUI also reads its text encoder)
    MODELS/clip_vision/open_clip_pytorch_model.bin     (OpenCLIP ViT-H-14: image and text towers)

With ``--comfyui PATH`` MODELS is ``PATH/models``, so ComfyUI's own VAE and CLIP vision loaders list
the same files. Files are fetched with huggingface_hub into ``MODELS/.downloads`` (where an
interrupted download resumes) and moved into place only when complete, so a file at its final
path counts as complete and is skipped.
"""

import importlib.util
import os
import shutil
import socket
import sys
import urllib.parse
from dataclasses import dataclass

VARIANTS = ("moore", "musepose", "magicanimate", "unianimate")
UNIANIMATE_REPO = "ZheWang123/UniAnimate"
UNIANIMATE_MODELSCOPE = "https://www.modelscope.cn/models/iic/unianimate/files"
NETWORK_FILES = ("reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_guider.pth")
VAE_DIR = os.path.join("vae", "sd-vae-ft-mse")
CLIP_DIR = os.path.join("clip_vision", "sd-image-variations-image-encoder")
TEXT_ENCODER_DIR = os.path.join("text_encoders", "stable-diffusion-v1-5")
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the official copy of runwayml/stable-diffusion-v1-5
DWPOSE_DIR = "dwpose"
DENSEPOSE_DIR = "densepose"
STAGING = ".downloads"
WEIGHT_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")  # the loader's, without importing torch
HTTP_CLIENTS = ("httpx", "httpx2")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class Remote:
    """One file on the Hugging Face Hub and the models-folder path it goes to."""

    repo: str
    filename: str
    subfolder: str | None
    dest: str
    alternatives: tuple = ()  # other file names that stand in for this one in the same folder

    def url(self):
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, self.filename, subfolder=self.subfolder)


def networks_dir(variant):
    return os.path.join("animate_anyone", variant)


def _magicanimate():
    """zcxu-eric/MagicAnimate's three folders and SD1.5's unet/, laid out as magic-animate's README does."""
    folder = networks_dir("magicanimate")
    files = [Remote("zcxu-eric/MagicAnimate", name, sub, os.path.join(folder, sub, name), alternatives)
             for sub in ("appearance_encoder", "densepose_controlnet")
             for name, alternatives in (("config.json", ()),
                                        ("diffusion_pytorch_model.safetensors", ("diffusion_pytorch_model.bin",)))]
    files.append(Remote("zcxu-eric/MagicAnimate", "temporal_attention.ckpt", "temporal_attention",
                        os.path.join(folder, "temporal_attention", "temporal_attention.ckpt")))
    files += [Remote(SD15_REPO, "config.json", "unet", os.path.join(folder, "unet", "config.json")),
              Remote(SD15_REPO, "diffusion_pytorch_model.safetensors", "unet",
                     os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"),
                     ("diffusion_pytorch_model.bin",))]
    return files


def _networks(variant):
    if variant == "magicanimate":
        return _magicanimate()
    repo, subfolder = {"moore": ("patrolli/AnimateAnyone", None), "musepose": ("TMElyralab/MusePose", "MusePose")}[variant]
    return [Remote(repo, name, subfolder, os.path.join(networks_dir(variant), name),
                   (os.path.splitext(name)[0] + ".safetensors",)) for name in NETWORK_FILES]


# comfyui_controlnet_aux's DensePose TorchScript (pose.densepose.MODEL_FILE / HF_REPO), for the magicanimate variant.
DENSEPOSE = [Remote("LayerNorm/DensePose-TorchScript-with-hint-image", "densepose_r50_fpn_dl.torchscript", None,
                    os.path.join(DENSEPOSE_DIR, "densepose_r50_fpn_dl.torchscript"))]

COMMON = {
    # SD1.5's text encoder for the empty-prompt embedding MagicAnimate reads (ComfyUI's CLIPLoader lists it too).
    "text_encoder": [Remote(SD15_REPO, name, "text_encoder", os.path.join(TEXT_ENCODER_DIR, name), alternatives)
                     for name, alternatives in (("config.json", ()), ("model.safetensors", ("pytorch_model.bin",)))]
    + [Remote(SD15_REPO, name, "tokenizer", os.path.join(TEXT_ENCODER_DIR, "tokenizer", name))
       for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")],
    "densepose": DENSEPOSE,
    "dwpose": [Remote("yzd-v/DWPose", name, None, os.path.join(DWPOSE_DIR, name))
               for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")],
    "vae": [Remote("stabilityai/sd-vae-ft-mse", "config.json", None, os.path.join(VAE_DIR, "config.json")),
            Remote("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", None,
                   os.path.join(VAE_DIR, "diffusion_pytorch_model.safetensors"), ("diffusion_pytorch_model.bin",))],
    "clip_vision": [Remote("lambdalabs/sd-image-variations-diffusers", "config.json", "image_encoder",
                           os.path.join(CLIP_DIR, "config.json")),
                    Remote("lambdalabs/sd-image-variations-diffusers", "pytorch_model.bin", "image_encoder",
                           os.path.join(CLIP_DIR, "pytorch_model.bin"), ("model.safetensors",))],
}


UNIANIMATE = {
    "networks": [Remote(UNIANIMATE_REPO, "unianimate_16f_32f_non_ema_223000.pth", None,
                        os.path.join("animate_anyone", "unianimate", "unianimate_16f_32f_non_ema_223000.pth"),
                        ("unianimate_16f_32f_non_ema_223000.safetensors",))],
    "vae": [Remote(UNIANIMATE_REPO, "v2-1_512-ema-pruned.ckpt", None,
                   os.path.join("checkpoints", "v2-1_512-ema-pruned.ckpt"), ("v2-1_512-ema-pruned.safetensors",))],
    "clip_vision": [Remote(UNIANIMATE_REPO, "open_clip_pytorch_model.bin", None,
                           os.path.join("clip_vision", "open_clip_pytorch_model.bin"))],
}


def check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
    return variant


COMPONENTS = {"moore": ("networks", "dwpose", "vae", "clip_vision"),
              "musepose": ("networks", "dwpose", "vae", "clip_vision"),
              "magicanimate": ("networks", "densepose", "vae", "text_encoder"),
              "unianimate": ("networks", "dwpose", "vae", "clip_vision")}


def remotes(variant, components=None):
    """The files a variant needs, per component (``networks`` = the variant's own networks); all of
    them by default."""
    check_variant(variant)
    components = COMPONENTS[variant] if components is None else components
    if variant == "unianimate":
        return {c: UNIANIMATE.get(c) or COMMON[c] for c in components}
    return {c: _networks(variant) if c == "networks" else COMMON[c] for c in components}


def default_models_dir():
    """``$POSEANIMATE_MODELS``, else a per-user cache folder (``~/.cache/poseanimate/models``, or
    ``$XDG_CACHE_HOME/poseanimate/models``; ``%LOCALAPPDATA%\\poseanimate\\models`` on Windows)."""
    if os.environ.get("POSEANIMATE_MODELS"):
        return os.path.abspath(os.path.expanduser(os.environ["POSEANIMATE_MODELS"]))
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = os.environ["LOCALAPPDATA"]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "poseanimate", "models")


def models_dir(models=None, comfyui=None):
    if models and comfyui:
        raise ValueError("give either --models DIR or --comfyui PATH, not both")
    if comfyui:
        if not os.path.isdir(comfyui):
            raise ValueError(f"--comfyui {comfyui}: no such folder (give the ComfyUI folder that holds models/)")
        return os.path.join(os.path.abspath(comfyui), "models")
    return os.path.abspath(os.path.expanduser(models)) if models else default_models_dir()


def located(root, f):
    """The path of ``f`` in ``root``: under its own name, else the first of its alternatives present; None
    when neither is there."""
    folder = os.path.join(root, os.path.dirname(f.dest))
    for name in (os.path.basename(f.dest), *f.alternatives):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def missing(root, files):
    """The files not in ``root`` (under their own name or one of their alternatives)."""
    return [f for f in files if located(root, f) is None]


def _proxy_configured():
    return any(os.environ.get(v) for v in PROXY_VARIABLES)


def reachable(url, timeout=5.0):
    """None when the Hub's host accepts a connection (or a proxy is configured), else the reason.
    One quick check instead of huggingface_hub's half-minute of retries per file when offline."""
    if _proxy_configured():
        return None
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{parts.hostname}:{port}: {e.strerror or e}"
    return None


def network_errors():
    """What huggingface_hub raises when a transfer fails: its own errors, OSError (requests' errors,
    versions < 1) and the HTTP client's (httpx in 1.x, httpx2 in 2.x)."""
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    errors = (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError)
    for client in HTTP_CLIENTS:
        if importlib.util.find_spec(client):
            errors += (importlib.import_module(client).HTTPError,)
    return errors


class DownloadError(RuntimeError):
    """Some files could not be downloaded; the message lists every URL and where it goes."""


def manual_instructions(root, files):
    lines = ["Download these files by hand and put each one in the folder shown:"]
    for f in files:
        lines.append(f"  {f.url()}\n      -> {os.path.join(root, os.path.dirname(f.dest))}{os.sep}")
    if any(f.repo == UNIANIMATE_REPO for f in files):
        lines.append(f"UniAnimate's files are also on ModelScope, under the same names: {UNIANIMATE_MODELSCOPE}")
    lines.append("Then run the command again.")
    return "\n".join(lines)


def download(root, files, log=print):
    """Fetch every file of ``files`` that is not in ``root`` yet; returns the paths written.
    Raises DownloadError with manual instructions when the Hub cannot be reached."""
    todo = missing(root, files)
    for f in files:
        if f not in todo:
            log(f"already there: {os.path.join(root, f.dest)}")
    if not todo:
        return []
    reason = reachable(todo[0].url())
    if reason:
        raise DownloadError(f"cannot reach the Hugging Face Hub ({reason}).\n{manual_instructions(root, todo)}")
    from huggingface_hub import hf_hub_download

    staging = os.path.join(root, STAGING)
    written = []
    for i, f in enumerate(todo):
        final = os.path.join(root, f.dest)
        log(f"downloading {f.url()} -> {final}")
        try:
            path = hf_hub_download(f.repo, f.filename, subfolder=f.subfolder,
                                   local_dir=os.path.join(staging, f.repo.replace("/", "--")))
        except network_errors() as e:
            raise DownloadError(f"downloading {f.url()} failed: {' '.join(str(e).split())}\n"
                                f"{manual_instructions(root, todo[i:])}") from e
        os.makedirs(os.path.dirname(final), exist_ok=True)
        shutil.move(path, final)
        written.append(final)
    shutil.rmtree(staging, ignore_errors=True)
    return written
