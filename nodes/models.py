"""Nodes that load the networks and run the ReferenceNet and the PoseGuider."""

from comfy_api.latest import io

from ..models.loading import DTYPES, CheckpointError, build_models, resolve_files
from ..sampling.animate_anyone import encode_reference
from ..sampling.engine import VAE_SCALE
from . import common, magicanimate, unianimate

class LoadModels(io.ComfyNode):
    NAME = "PoseAnimate Load Models"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateLoadModels",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/models",
            description="Loads an Animate Anyone or MusePose release (ReferenceNet, denoising UNet with motion "
                        "modules, PoseGuider) or UniAnimate's video UNet from a folder under "
                        "models/animate_anyone; the family is recognised from the files' keys.",
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
        if magicanimate.is_folder(path):
            return io.NodeOutput(magicanimate.load(cls.NAME, path, dtype))
        found = unianimate.find(path)
        if found is not None:
            return io.NodeOutput(unianimate.load(cls.NAME, found, path, dtype))
        try:
            files = resolve_files(path)
        except CheckpointError as e:
            raise common.PoseAnimateError(cls.NAME, "folder", e.problem, common.download_help()) from e
        place = common.placement(dtype, sum(t.numel() for _, sd in files.values() for t in sd.values()))
        try:
            nets = build_models(files, device=place.offload_device, dtype=place.weight_dtype,
                                operations=place.operations)
        except CheckpointError as e:
            raise common.PoseAnimateError(cls.NAME, "folder", e.problem, common.download_help()) from e
        del files
        patchers = [place.patcher(net) for net in (nets.reference_net, nets.denoising_unet, nets.pose_guider)]
        return io.NodeOutput(common.LoadedModels(
            *patchers, variant=nets.variant, trained_length=nets.trained_length, embed_dim=nets.embed_dim,
            compute_dtype=place.compute_dtype, folder=path))


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
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="Animate Anyone / MusePose: CLIPVisionEncode of the character image "
                                                  "with crop 'none', using the sd-image-variations image encoder "
                                                  "(ViT-L/14, 768-wide image_embeds). UniAnimate: the same with "
                                                  "OpenCLIP ViT-H-14 (open_clip_pytorch_model.bin)."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="MagicAnimate: CLIPTextEncode of an empty text with Stable Diffusion "
                                              "1.5's CLIP (its appearance encoder and UNet read it). UniAnimate: "
                                              "CLIPTextEncode of an empty text with the CLIP of "
                                              "v2-1_512-ema-pruned.ckpt (CheckpointLoaderSimple)."),
                io.Image.Input("reference_pose", optional=True,
                               tooltip="UniAnimate only: the character image's own pose, rendered at the video size "
                                       "(Pose Extract on the character, then Pose Render)."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="UniAnimate only, with first_frame: the character image at the video size."),
                io.Boolean.Input("first_frame", default=False, optional=True,
                                 tooltip="UniAnimate only: condition the first frame on reference_image (the "
                                         "reference's 'reference image as the first frame' option) instead of the "
                                         "reference latent and pose."),
            ],
            outputs=[common.Reference.Output(tooltip="The ReferenceNet features of the character; connect to the "
                                                     "Sampler.")],
        )

    @classmethod
    def execute(cls, models, latent, clip_vision_output=None, conditioning=None, reference_pose=None,
                reference_image=None, first_frame=False):
        samples = latent["samples"]
        if samples.ndim != 4 or samples.shape[1] != 4:
            raise common.PoseAnimateError(cls.NAME, "latent", f"expected an SD1.5 latent [1, 4, h, w], got "
                                          f"{list(samples.shape)}.", "encode the character image with VAEEncode "
                                          "and an SD1.5 VAE (sd-vae-ft-mse).")
        if samples.shape[0] != 1:
            raise common.PoseAnimateError(cls.NAME, "latent", f"it holds {samples.shape[0]} images; the ReferenceNet "
                                          "encodes one character image.", "encode a single image (pick one with "
                                          "ImageFromBatch before VAEEncode).")
        if models.family == magicanimate.FAMILY:
            return io.NodeOutput(magicanimate.reference(cls.NAME, models, samples, conditioning))
        if models.family == unianimate.FAMILY:
            return io.NodeOutput(unianimate.encode_reference(cls.NAME, models, samples, clip_vision_output,
                                                             conditioning, reference_image, reference_pose,
                                                             first_frame))
        embeds = getattr(clip_vision_output, "image_embeds", None)
        if embeds is None or embeds.ndim != 2 or embeds.shape[-1] != models.embed_dim:
            found = "nothing connected" if clip_vision_output is None else "no image_embeds" if embeds is None \
                else f"image_embeds of shape {list(embeds.shape)}"
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
                io.Image.Input("pose_images", tooltip="Pose images from PoseAnimate Pose Render in the model's style "
                                                      "(MagicAnimate: DensePose images from PoseAnimate DensePose "
                                                      "Extract), at the video's size (multiples of 8)."),
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
        magicanimate.check_pose_images(cls.NAME, models.family, pose_images)
        return io.NodeOutput(common.PoseEncoding(pose_images, models.variant))


NODES = [LoadModels, ReferenceEncode, PoseGuiderEncode]
