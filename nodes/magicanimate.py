"""The MagicAnimate family in the pack's nodes: Load Models, ReferenceNet Encode, PoseGuider Encode and
the Sampler call these when the folder or the models are MagicAnimate's."""

import os
from dataclasses import dataclass

import comfy.model_management as mm
import torch
from comfy.model_patcher import ModelPatcher

from ..models import magicanimate as ma_models
from ..models.loading import CheckpointError
from ..sampling import magicanimate as ma
from ..sampling.engine import VAE_SCALE
from ..sampling.families import context_settings
from . import common

FAMILY = ma_models.FAMILY
# Skeleton renders are drawn on black; DensePose renders (ours, MagicAnimate's videos, comfyui_controlnet_aux's)
# on their colour map's first colour: viridis (68, 1, 84) or parula (53, 42, 135). Above these shares of the
# pixels, images are the other kind.
SKELETON_DARK_SHARE = 0.6
DENSEPOSE_BACKGROUND_SHARE = 0.3
DENSEPOSE_BACKGROUNDS = ((68, 1, 84), (53, 42, 135))


def is_folder(path):
    return ma_models.is_magicanimate_folder(path)


def download_help():
    root = (common.model_folder_paths(common.MODEL_FOLDER) or [os.path.join("models", common.MODEL_FOLDER)])[0]
    return (f"put MagicAnimate's release ({ma_models.RELEASE}: appearance_encoder/, densepose_controlnet/, "
            f"temporal_attention/) and Stable Diffusion 1.5's unet/ folder ({ma_models.SD15}) together in a folder "
            f"under {root} (e.g. {os.path.join(root, FAMILY)}), or run `poseanimate download --variant magicanimate "
            "--comfyui <ComfyUI folder>`; then refresh the page.")


@dataclass
class LoadedMagicAnimate(common.LoadedFamily):
    """POSEANIMATE_MODELS for MagicAnimate: its three networks under ComfyUI's model management."""

    appearance_encoder: ModelPatcher
    denoising_unet: ModelPatcher
    controlnet: ModelPatcher
    family: str = FAMILY

    @property
    def variant(self):
        return self.family


@dataclass
class AppearanceInput:
    """POSEANIMATE_REFERENCE's features for MagicAnimate: what its appearance encoder reads at every step."""

    latents: torch.Tensor
    text_embeds: torch.Tensor


def load(node, path, dtype):
    try:
        files = ma_models.find_files(path)
    except CheckpointError as e:
        raise common.PoseAnimateError(node, "folder", str(e), download_help()) from e
    place = common.placement(dtype, sum(os.path.getsize(p) for p in files.values()) // 4)
    try:
        nets = ma_models.build_models(files, device=place.offload_device, dtype=place.weight_dtype,
                                      operations=place.operations)
    except CheckpointError as e:
        raise common.PoseAnimateError(node, "folder", str(e), download_help()) from e
    patchers = [place.patcher(net) for net in (nets.appearance_encoder, nets.denoising_unet, nets.controlnet)]
    return LoadedMagicAnimate(*patchers, trained_length=nets.trained_length, embed_dim=nets.embed_dim,
                              compute_dtype=place.compute_dtype, folder=path)


def reference(node, models, samples, conditioning):
    """The appearance encoder runs at every step inside the Sampler; here its inputs are checked and kept."""
    fix = ("connect CLIPTextEncode with an empty text, using the CLIP of Stable Diffusion 1.5 (CLIPLoader type "
           "stable_diffusion, or CheckpointLoaderSimple's CLIP): MagicAnimate was made with the empty prompt.")
    if conditioning is None:
        raise common.PoseAnimateError(node, "conditioning", "MagicAnimate models need the text conditioning.", fix)
    embeds = conditioning[0][0] if conditioning and len(conditioning[0]) else None
    if embeds is None or embeds.ndim != 3 or embeds.shape[-1] != models.embed_dim:
        found = "nothing" if embeds is None else f"a tensor of shape {list(embeds.shape)}"
        raise common.PoseAnimateError(node, "conditioning", f"it holds {found}; these models expect "
                                      f"[1, 77, {models.embed_dim}] (SD1.5's CLIP text encoder).", fix)
    features = AppearanceInput(samples[:1] * VAE_SCALE, embeds[:1])
    return common.ReferenceEncoding(features, samples.shape[2], samples.shape[3])


def colour_share(images, colour, tolerance=16):
    """Fraction of the pixels within ``tolerance`` (0-255) of ``colour`` in a few frames (first, middle,
    last) of an IMAGE batch."""
    picks = images[[0, images.shape[0] // 2, images.shape[0] - 1]].float()
    if images.dtype != torch.uint8:
        picks = picks * 255
    return ((picks - torch.tensor(colour)).abs().amax(dim=-1) <= tolerance).float().mean().item()


def check_pose_images(node, family, images):
    """Skeleton renders into MagicAnimate, or DensePose renders into a skeleton family: an error."""
    if family == FAMILY and (share := colour_share(images, (0, 0, 0))) > SKELETON_DARK_SHARE:
        raise common.PoseAnimateError(node, "pose_images", f"{share:.0%} of the pixels are black: these look like "
                                      "skeleton renders, but MagicAnimate follows DensePose renders.",
                                      "connect PoseAnimate DensePose Extract (or comfyui_controlnet_aux's DensePose "
                                      "Estimator) instead of Pose Render, or load Animate Anyone / MusePose models.")
    share = max(colour_share(images, c) for c in DENSEPOSE_BACKGROUNDS)
    if family != FAMILY and share > DENSEPOSE_BACKGROUND_SHARE:
        raise common.PoseAnimateError(node, "pose_images", f"{share:.0%} of the pixels have a DensePose render's "
                                      f"background colour: these are not skeleton renders, which {family} models "
                                      "follow.", "connect PoseAnimate Pose Render, or load MagicAnimate models for "
                                      "DensePose images.")


def sample(node, models, reference, pose, *, noise, steps, cfg, scheduler, context, callback, seed,
           pose_temperature=0.0):
    if not isinstance(reference.features, AppearanceInput):
        raise common.PoseAnimateError(node, "reference", "it was encoded for Animate Anyone / MusePose models, but "
                                      "'models' are MagicAnimate's.", "connect the ReferenceNet Encode node that "
                                      "takes these models (and a text conditioning).")
    frames, h, w = noise.shape[0], noise.shape[2], noise.shape[3]
    opts = context_settings(FAMILY, context)
    rows = opts.window_batch * min(opts.length, frames) * (2 if cfg > 1 else 1)
    memory = rows * h * w * mm.dtype_size(models.compute_dtype) * 0.01 * 1024 * 1024
    nets = common.on_device(models.appearance_encoder, models.denoising_unet, models.controlnet,
                            memory_required=memory)
    networks = ma_models.MagicAnimateModels(*nets, trained_length=models.trained_length)
    return ma.sample(networks, reference_latents=reference.features.latents,
                     text_embeds=reference.features.text_embeds, pose_images=pose.images, noise=noise, steps=steps,
                     cfg=cfg, scheduler=scheduler, context=opts, callback=callback, seed=seed,
                     trained_length=models.trained_length, device=models.load_device, dtype=models.compute_dtype,
                     pose_temperature=pose_temperature)
