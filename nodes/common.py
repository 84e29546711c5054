"""What the PoseAnimate nodes share: their custom types, errors that name the node, input and fix,
the model folders, and handing networks to ComfyUI's model management."""

import os
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.ops
import folder_paths
import torch
from comfy.ldm.modules.attention import optimized_attention
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..models.attention import set_attention
from ..models.loading import DOWNLOADS, DTYPES, WEIGHT_EXTENSIONS

CATEGORY = "PoseAnimate"
MODEL_FOLDER = "animate_anyone"
DWPOSE_FOLDER = "dwpose"
DENSEPOSE_FOLDER = "densepose"

Models = io.Custom("POSEANIMATE_MODELS")
Reference = io.Custom("POSEANIMATE_REFERENCE")
Pose = io.Custom("POSEANIMATE_POSE")
Context = io.Custom("POSEANIMATE_CONTEXT")
PoseKeypoint = io.Custom("POSE_KEYPOINT")


class PoseAnimateError(ValueError):
    """A node's input is wrong; the message says which node, which input and what to do."""

    def __init__(self, node, input_name, problem, fix):
        super().__init__(f"{node}: input '{input_name}': {problem} Fix: {fix}")


def register_model_folders():
    """Make ``models/animate_anyone``, ``models/dwpose`` and ``models/densepose`` known to folder_paths
    (keeping any paths extra_model_paths.yaml already gave them)."""
    for name, extensions in ((MODEL_FOLDER, set(WEIGHT_EXTENSIONS)), (DWPOSE_FOLDER, {".onnx"}),
                             (DENSEPOSE_FOLDER, {".torchscript", ".pt"})):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, known = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions)


def model_folder_paths(name):
    return folder_paths.get_folder_paths(name) if name in folder_paths.folder_names_and_paths else []


def controlnet_aux_folders():
    """comfyui_controlnet_aux's model folders: AUX_ANNOTATOR_CKPTS_PATH, then custom_nodes/*controlnet_aux*/ckpts."""
    folders = [os.environ["AUX_ANNOTATOR_CKPTS_PATH"]] if os.environ.get("AUX_ANNOTATOR_CKPTS_PATH") else []
    for root in folder_paths.get_folder_paths("custom_nodes"):
        if os.path.isdir(root):
            folders += [os.path.join(root, name, "ckpts") for name in sorted(os.listdir(root))
                        if "controlnet_aux" in name.lower()]
    return folders


def model_folders():
    """``{name: path}`` of the sub-folders of every ``animate_anyone`` models path (first one wins)."""
    found = {}
    for root in model_folder_paths(MODEL_FOLDER):
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if os.path.isdir(os.path.join(root, name)):
                    found.setdefault(name, os.path.join(root, name))
    return found


def download_help():
    root = (model_folder_paths(MODEL_FOLDER) or [os.path.join(folder_paths.models_dir, MODEL_FOLDER)])[0]
    comfy_root = os.path.dirname(folder_paths.models_dir)
    return (f"put the four files of one release in a folder under {root} (e.g. {os.path.join(root, 'moore')}): "
            f"Animate Anyone from {DOWNLOADS['moore']}; MusePose from {DOWNLOADS['musepose']}. Or run "
            f"`poseanimate download --variant moore --comfyui {comfy_root}` (or --variant musepose, or --variant "
            "unianimate for UniAnimate's unianimate_16f_32f_non_ema_223000.pth in its own folder), "
            "then refresh the page.")


@dataclass(frozen=True)
class Placement:
    """Where ComfyUI puts a family's networks: loaded on ``load_device`` to run, kept on ``offload_device``,
    stored in ``weight_dtype``, computed in ``compute_dtype`` by ``operations``."""

    load_device: torch.device
    offload_device: torch.device
    weight_dtype: torch.dtype
    compute_dtype: torch.dtype
    operations: object

    def patcher(self, net):
        """``net`` (built on the offload device) under ComfyUI's model management, with its attention."""
        set_attention(net, optimized_attention)
        return ModelPatcher(net, self.load_device, self.offload_device)


def placement(dtype, params):
    """ComfyUI's placement of networks of ``params`` parameters for a Load Models ``dtype`` option."""
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    weight_dtype = DTYPES.get(dtype) or mm.unet_dtype(load_device, params)
    cast_dtype = mm.unet_manual_cast(weight_dtype, load_device)
    operations = comfy.ops.pick_operations(weight_dtype, cast_dtype, load_device)
    return Placement(load_device, offload_device, weight_dtype, cast_dtype or weight_dtype, operations)


@dataclass(kw_only=True)
class LoadedFamily:
    """The base of every family's POSEANIMATE_MODELS (its networks' ModelPatchers are the subclass's
    fields): ``load_device`` and ``offload_device`` are those of ``main_patcher``, the patcher of the
    network every step runs (a ``denoising_unet`` unless overridden)."""

    trained_length: int
    embed_dim: int
    compute_dtype: torch.dtype
    folder: str

    @property
    def main_patcher(self):
        return self.denoising_unet

    @property
    def load_device(self):
        return self.main_patcher.load_device

    @property
    def offload_device(self):
        return self.main_patcher.offload_device


@dataclass
class LoadedModels(LoadedFamily):
    """POSEANIMATE_MODELS: the three networks, each under ComfyUI's model management."""

    reference_net: ModelPatcher
    denoising_unet: ModelPatcher
    pose_guider: ModelPatcher
    variant: str

    @property
    def family(self):
        return self.variant


@dataclass
class ReferenceEncoding:
    """POSEANIMATE_REFERENCE: the ReferenceNet features and the latent size they belong to."""

    features: object
    latent_height: int
    latent_width: int


@dataclass
class PoseEncoding:
    """POSEANIMATE_POSE: the pose images ``[F, H, W, 3]`` as given (the Sampler runs the PoseGuider on each
    window's frames, so nothing per frame is computed or kept ahead) and the family they are for."""

    images: torch.Tensor
    family: str

    @property
    def frames(self):
        return self.images.shape[0]


def on_device(*patchers, memory_required=0):
    """Let ComfyUI load ``patchers`` (fully or partially) onto their device; returns the network(s)."""
    mm.load_models_gpu(list(patchers), memory_required=memory_required)
    return patchers[0].model if len(patchers) == 1 else [p.model for p in patchers]


def unload(patcher):
    """Move ``patcher`` back to its offload device and out of ComfyUI's loaded-model list."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            if loaded.model_unload():
                mm.current_loaded_models.pop(i)
            return

