"""The UniAnimate family in the pack's nodes: loading its UNet, preparing its reference, sampling.

The node classes (Load Models, Reference Encode, Pose Encode, Sampler) call these helpers when the
models are UniAnimate's; their inputs and node ids are the same for every family.
"""

import os
from dataclasses import dataclass

import comfy.latent_formats
import comfy.model_management as mm
import comfy.ops
import latent_preview
import torch
from comfy.ldm.modules.attention import optimized_attention
from comfy.model_patcher import ModelPatcher

from ..models.loading import CheckpointError
from ..models.unianimate import DOWNLOAD, build_unianimate, find_unianimate_file, set_attention_fn
from ..sampling.engine import VAE_SCALE
from ..sampling.families import context_settings, timestep_count
from ..sampling.unianimate import FAMILY, sample, starting_latents
from . import common

ENCODERS_HELP = ("load v2-1_512-ema-pruned.ckpt (UniAnimate's release) with CheckpointLoaderSimple and connect its "
                 "VAE to VAEEncode / VAE Decode and its CLIP to a CLIPTextEncode with an empty text; load "
                 "open_clip_pytorch_model.bin with CLIPVisionLoader for CLIPVisionEncode (crop none)")


@dataclass
class UniAnimateLoaded(common.LoadedFamily):
    """POSEANIMATE_MODELS for UniAnimate: the one video UNet under ComfyUI's model management."""

    unet: ModelPatcher
    family: str = FAMILY

    @property
    def variant(self):
        return self.family

    @property
    def main_patcher(self):
        return self.unet


@dataclass
class UniAnimateReference:
    """POSEANIMATE_REFERENCE for UniAnimate: what its UNet reads about the character."""

    latents: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    reference_image: torch.Tensor | None
    reference_pose: torch.Tensor | None
    first_frame: bool
    latent_height: int
    latent_width: int
    family: str = FAMILY


def find(path):
    """``(file, state_dict)`` of the UniAnimate UNet in a model folder, or None."""
    return find_unianimate_file(path) if os.path.isdir(path) else None


def load(node, found, folder, dtype):
    path, sd = found
    place = common.placement(dtype, sum(t.numel() for t in sd.values()))
    try:
        unet = build_unianimate(sd, path, device=place.offload_device, dtype=place.weight_dtype,
                                operations=place.operations)
    except CheckpointError as e:
        raise common.PoseAnimateError(node, "folder", str(e), f"download it again from {DOWNLOAD}.") from e
    set_attention_fn(unet, optimized_attention)
    return UniAnimateLoaded(place.patcher(unet), trained_length=32, embed_dim=unet.config.context_dim,
                            compute_dtype=place.compute_dtype, folder=folder)


def _video_image(node, name, image, h, w):
    if image is None:
        return None
    if image.ndim != 4 or tuple(image.shape[1:3]) != (8 * h, 8 * w):
        raise common.PoseAnimateError(node, name, f"it is {list(image.shape)} but the latent is from a "
                                      f"{8 * w}x{8 * h} image.", "scale it (ImageScale) to the video size.")
    return image[0].cpu()


def encode_reference(node, models, samples, clip_vision_output, conditioning, reference_image, reference_pose,
                     first_frame):
    h, w = samples.shape[-2:]
    dim = models.embed_dim
    embeds = getattr(clip_vision_output, "image_embeds", None)
    if embeds is None or embeds.ndim != 2 or embeds.shape[-1] != dim:
        found = "no image_embeds" if embeds is None else f"image_embeds of shape {list(embeds.shape)}"
        raise common.PoseAnimateError(node, "clip_vision_output", f"it has {found}; UniAnimate expects [1, {dim}].",
                                      ENCODERS_HELP + ".")
    if conditioning is None:
        raise common.PoseAnimateError(node, "conditioning", "UniAnimate needs the empty prompt's text tokens.",
                                      ENCODERS_HELP + ".")
    text = conditioning[0][0]
    if text.ndim != 3 or text.shape[-1] != dim:
        raise common.PoseAnimateError(node, "conditioning", f"it is {list(text.shape)}; UniAnimate expects "
                                      f"[1, 77, {dim}] (the SD2.1 checkpoint's OpenCLIP text encoder).",
                                      ENCODERS_HELP + ".")
    reference_image = _video_image(node, "reference_image", reference_image, h, w)
    reference_pose = _video_image(node, "reference_pose", reference_pose, h, w)
    if first_frame and reference_image is None:
        raise common.PoseAnimateError(node, "reference_image", "first_frame is on, which conditions the first frame "
                                      "on the character image.", "connect the character image (scaled to the "
                                      "video size) or turn first_frame off.")
    if not first_frame and reference_pose is None:
        raise common.PoseAnimateError(node, "reference_pose", "UniAnimate reads the character's own pose.",
                                      "render the character image's pose (Pose Extract on it, then Pose Render at "
                                      "the video size) and connect it here.")
    return UniAnimateReference(latents=samples[:1].float().cpu() * VAE_SCALE, image_embeds=embeds[:1].float().cpu(),
                               text_embeds=text[:1].float().cpu(), reference_image=reference_image,
                               reference_pose=reference_pose, first_frame=bool(first_frame), latent_height=h,
                               latent_width=w)


def run_sampler(node, models, reference, pose_images, *, frames, seed, steps, cfg, scheduler, context, progress,
                pose_temperature=0.0):
    """The Sampler for UniAnimate: returns latents ``[F, 4, h, w]`` (x 0.18215)."""
    if getattr(reference, "family", None) != FAMILY:
        raise common.PoseAnimateError(node, "reference", "it was not encoded for UniAnimate models.",
                                      "connect Reference Encode to the same Load Models node as the Sampler.")
    h, w = reference.latent_height, reference.latent_width
    if tuple(pose_images.shape[1:3]) != (8 * h, 8 * w):
        raise common.PoseAnimateError(node, "pose", f"the pose images are {pose_images.shape[2]}x"
                                      f"{pose_images.shape[1]} but the reference latent is from a {8 * w}x{8 * h} "
                                      "image.", "render the poses at the character image's (scaled) size.")
    opts = context_settings(FAMILY, context)
    noise = starting_latents((frames, 4, h, w), seed, reference.latents, context=opts, scheduler=scheduler)
    runs = timestep_count(FAMILY, scheduler, steps)
    rows = opts.window_batch * (min(opts.length, frames) + 1) * (2 if cfg > 1 else 1)
    memory = rows * h * w * mm.dtype_size(models.compute_dtype) * 0.01 * 1024 * 1024
    unet = common.on_device(models.unet, memory_required=memory)
    previewer = latent_preview.get_previewer(models.load_device, comfy.latent_formats.SD15())
    ref_image = reference.reference_image
    ref_pose = reference.reference_pose if reference.reference_pose is not None else torch.zeros_like(ref_image)
    return sample(unet, reference_latents=reference.latents, image_embeds=reference.image_embeds,
                  text_embeds=reference.text_embeds, reference_image=ref_image, reference_pose=ref_pose,
                  pose_images=pose_images[:frames], noise=noise, first_frame=reference.first_frame, steps=steps,
                  cfg=cfg, scheduler=scheduler, context=opts, callback=progress(frames, opts, runs, previewer),
                  seed=seed, device=models.load_device, dtype=models.compute_dtype, pose_temperature=pose_temperature)
