"""Nodes that load the networks and run the ReferenceNet and the PoseGuider."""

import comfy.model_management as mm
import comfy.ops
from comfy.ldm.modules.attention import optimized_attention
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..models.attention import set_attention
from ..models.loading import DTYPES, CheckpointError, build_models, resolve_files
from ..sampling.animate_anyone import encode_reference
from ..sampling.engine import VAE_SCALE
from . import common

class LoadModels(io.ComfyNode):
    NAME = "PoseAnimate Load Models"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateLoadModels",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/models",
            description="Loads an Animate Anyone or MusePose release (ReferenceNet, denoising UNet with motion "
                        "modules, PoseGuider) from a folder under models/animate_anyone; the variant is "
                        "recognised from the files' keys.",
            inputs=[
                io.Combo.Input("folder", options=list(common.model_folders()),
                               tooltip="A folder under models/animate_anyone holding reference_unet, denoising_unet, "
                                       "pose_guider and (Animate Anyone) motion_module files, as released."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Weight precision. auto: what ComfyUI picks for your device (fp16 or bf16 on "
                                       "most GPUs, fp32 on the CPU); the computation is cast where the device "
                                       "cannot compute in the chosen precision."),
            ],
            outputs=[common.Models.Output(tooltip="The three networks, loaded and offloaded by ComfyUI as memory "
                                                  "requires; connect to ReferenceNet Encode, PoseGuider Encode and "
                                                  "the Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, folder):
        if folder not in common.model_folders():
            return f"{cls.NAME}: input 'folder': no model folder named {folder!r}. Fix: {common.download_help()}"
        return True

    @classmethod
    def execute(cls, folder, dtype):
        path = common.model_folders().get(folder)
        if path is None:
            raise common.PoseAnimateError(cls.NAME, "folder", f"no model folder named {folder!r}.",
                                          common.download_help())
        try:
            files = resolve_files(path)
        except CheckpointError as e:
            raise common.PoseAnimateError(cls.NAME, "folder", e.problem, common.download_help()) from e
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        params = sum(t.numel() for _, sd in files.values() for t in sd.values())
        weight_dtype = DTYPES.get(dtype) or mm.unet_dtype(load_device, params)
        cast_dtype = mm.unet_manual_cast(weight_dtype, load_device)
        operations = comfy.ops.pick_operations(weight_dtype, cast_dtype, load_device)
        try:
            nets = build_models(files, device=offload_device, dtype=weight_dtype, operations=operations)
        except CheckpointError as e:
            raise common.PoseAnimateError(cls.NAME, "folder", e.problem, common.download_help()) from e
        del files
        patchers = []
        for net in (nets.reference_net, nets.denoising_unet, nets.pose_guider):
            set_attention(net, optimized_attention)
            patchers.append(ModelPatcher(net, load_device, offload_device))
        return io.NodeOutput(common.LoadedModels(
            *patchers, variant=nets.variant, trained_length=nets.trained_length, embed_dim=nets.embed_dim,
            compute_dtype=cast_dtype or weight_dtype, folder=path))


class ReferenceEncode(io.ComfyNode):
    NAME = "PoseAnimate ReferenceNet Encode"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateReferenceEncode",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/models",
            description="Runs the ReferenceNet once on the character image; its features carry the character's "
                        "appearance into every frame. The ReferenceNet leaves the GPU afterwards.",
            inputs=[
                common.Models.Input("models", tooltip="From PoseAnimate Load Models."),
                io.Latent.Input("latent", tooltip="The character image encoded by VAEEncode (sd-vae-ft-mse), at the "
                                                  "video's size: one image."),
                io.ClipVisionOutput.Input("clip_vision_output",
                                          tooltip="CLIPVisionEncode of the character image with crop 'none', using "
                                                  "the sd-image-variations image encoder (ViT-L/14, 768-wide "
                                                  "image_embeds)."),
            ],
            outputs=[common.Reference.Output(tooltip="The ReferenceNet features of the character; connect to the "
                                                     "Sampler.")],
        )

    @classmethod
    def execute(cls, models, latent, clip_vision_output):
        samples = latent["samples"]
        if samples.ndim != 4 or samples.shape[1] != 4:
            raise common.PoseAnimateError(cls.NAME, "latent", f"expected an SD1.5 latent [1, 4, h, w], got "
                                          f"{list(samples.shape)}.", "encode the character image with VAEEncode "
                                          "and an SD1.5 VAE (sd-vae-ft-mse).")
        if samples.shape[0] != 1:
            raise common.PoseAnimateError(cls.NAME, "latent", f"it holds {samples.shape[0]} images; the ReferenceNet "
                                          "encodes one character image.", "encode a single image (pick one with "
                                          "ImageFromBatch before VAEEncode).")
        embeds = getattr(clip_vision_output, "image_embeds", None)
        if embeds is None or embeds.ndim != 2 or embeds.shape[-1] != models.embed_dim:
            found = "no image_embeds" if embeds is None else f"image_embeds of shape {list(embeds.shape)}"
            raise common.PoseAnimateError(cls.NAME, "clip_vision_output", f"it has {found}; these models expect "
                                          f"[1, {models.embed_dim}].", "load the sd-image-variations image "
                                          "encoder (CLIP ViT-L/14 with projection) in CLIPVisionLoader.")
        net = common.on_device(models.reference_net)
        features = encode_reference(net, samples[:1] * VAE_SCALE, embeds[:1], device=models.load_device,
                                    dtype=models.compute_dtype)
        features.tokens = {i: t.to(models.offload_device) for i, t in features.tokens.items()}
        features.image_embeds = features.image_embeds.to(models.offload_device)
        common.unload(models.reference_net)
        return io.NodeOutput(common.ReferenceEncoding(features, samples.shape[2], samples.shape[3]))


class PoseGuiderEncode(io.ComfyNode):
    NAME = "PoseAnimate PoseGuider Encode"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimatePoseGuiderEncode",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/models",
            description="Checks the rendered pose images and hands them to the Sampler, which runs the PoseGuider "
                        "on each context window's frames (memory does not grow with the video).",
            inputs=[
                common.Models.Input("models", tooltip="From PoseAnimate Load Models."),
                io.Image.Input("pose_images", tooltip="Pose images from PoseAnimate Pose Render in the model's style, "
                                                      "at the video's size (multiples of 8)."),
            ],
            outputs=[common.Pose.Output(tooltip="The pose input, one per frame; connect to the Sampler.")],
        )

    @classmethod
    def execute(cls, models, pose_images):
        frames, height, width = pose_images.shape[:3]
        if height % 8 or width % 8:
            raise common.PoseAnimateError(cls.NAME, "pose_images", f"the images are {width}x{height}, not "
                                          "multiples of 8.", "render the poses (and scale the character image) "
                                          "to a width and height that are multiples of 8.")
        return io.NodeOutput(common.PoseEncoding(pose_images, models.variant))


NODES = [LoadModels, ReferenceEncode, PoseGuiderEncode]
