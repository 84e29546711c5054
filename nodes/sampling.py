"""Nodes that set up the context windows, run the sampler and decode the frames."""

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..sampling.context import FUSE, SCHEDULES, ContextOptions, windows
from ..sampling.animate_anyone import sample
from ..sampling.engine import VAE_SCALE, make_noise
from ..sampling.families import context_settings
from ..sampling.schedulers import SAMPLERS
from . import common, magicanimate, unianimate

CLOSED_LOOP = {"auto": None, "on": True, "off": False}
BETA_SCHEDULES = ["auto", "scaled_linear", "linear"]


class ContextWindows(io.ComfyNode):
    NAME = "PoseAnimate Context Windows"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateContextWindows",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/sampling",
            description="How a video longer than the motion modules' window is split into overlapping windows "
                        "and how the windows' predictions are blended.",
            inputs=[
                io.Int.Input("length", default=24, min=1, max=256,
                             tooltip="Frames per window. Keep it at most the frames the motion modules were trained "
                                     "on (24 for Animate Anyone, 128 for MusePose)."),
                io.Int.Input("overlap", default=4, min=0, max=255,
                             tooltip="Frames shared by neighbouring windows; must be smaller than length."),
                io.Int.Input("stride", default=1, min=1, max=8,
                             tooltip="uniform/looped schedules: also run dilated windows (every 2nd, 4th... frame) "
                                     "up to this level, for longer-range coherence."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="static",
                               tooltip="static: fixed windows, no wrap-around. uniform: windows shift every step. "
                                       "looped: windows wrap around the end (for loops). moore: the reference "
                                       "Animate Anyone pipeline's windows (looped, closed loop)."),
                io.Combo.Input("fuse", options=list(FUSE), default="pyramid",
                               tooltip="How overlapping windows blend: flat (equal weights), pyramid (centre of a "
                                       "window counts more), overlap-linear (ramps across the overlap only)."),
                io.Combo.Input("closed_loop", options=list(CLOSED_LOOP), default="auto",
                               tooltip="Add the window that wraps from the last frames to the first (looped and "
                                       "moore schedules). auto: the schedule's own default (on for moore only)."),
                io.Int.Input("window_batch", default=1, min=1, max=64,
                             tooltip="Windows sent through the UNet together: faster on a large GPU, more memory."),
                io.Boolean.Input("freenoise", default=False,
                                 tooltip="FreeNoise: each window's starting noise is a shuffle of the previous "
                                         "window's, so long videos keep one look."),
            ],
            outputs=[common.Context.Output(tooltip="Context window options; connect to the Sampler's context.")],
        )

    @classmethod
    def validate_inputs(cls, length, overlap):
        if length is not None and overlap is not None and overlap >= length:
            return f"{cls.NAME}: input 'overlap': {overlap} is not smaller than length {length}. Fix: lower overlap."
        return True

    @classmethod
    def execute(cls, length, overlap, stride, schedule, fuse, closed_loop, window_batch, freenoise):
        try:
            opts = ContextOptions.from_dict(dict(length=length, overlap=overlap, stride=stride, schedule=schedule,
                                                 fuse=fuse, closed_loop=CLOSED_LOOP[closed_loop],
                                                 window_batch=window_batch, freenoise=freenoise))
        except ValueError as e:
            raise common.PoseAnimateError(cls.NAME, "overlap", str(e), "choose values the message allows.") from e
        return io.NodeOutput(opts)


def _progress(frames, opts, steps, previewer):
    """The engine callback: ComfyUI's progress bar over all windows of all steps, a latent preview
    after each step, and ComfyUI's cancel checked after every window."""
    per_step = [len(windows(frames, opts, s, steps)) for s in range(steps)]
    done = [sum(per_step[:s]) for s in range(steps + 1)]
    bar = comfy.utils.ProgressBar(done[-1])

    def callback(event):
        mm.throw_exception_if_processing_interrupted()
        if event["event"] == "window":
            bar.update_absolute(done[event["step"]] + event["window"], done[-1])
        elif event["event"] == "step":
            preview = None
            if previewer is not None:
                preview = previewer.decode_latent_to_preview_image("JPEG", event["denoised"][:1].float())
            bar.update_absolute(done[min(event["i"] + 1, steps)], done[-1], preview)

    return callback


class Sampler(io.ComfyNode):
    NAME = "PoseAnimate Sampler"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateSampler",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/sampling",
            description="Denoises the video: the denoising UNet with motion modules reads the reference features "
                        "and follows the poses, window by window.",
            inputs=[
                common.Models.Input("models", tooltip="From PoseAnimate Load Models."),
                common.Reference.Input("reference", tooltip="From PoseAnimate ReferenceNet Encode."),
                common.Pose.Input("pose", tooltip="From PoseAnimate PoseGuider Encode; one frame of video per pose."),
                common.Context.Input("context", optional=True,
                                     tooltip="From PoseAnimate Context Windows; default: 24-frame static windows "
                                             "overlapping by 4, pyramid blending."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise (drawn on the CPU: the same video on every device)."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=20.0, step=0.1, round=0.01,
                               tooltip="Guidance scale; 1 or less skips the unconditional pass (twice as fast)."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="ddim",
                               tooltip="ddim is what Animate Anyone and MusePose were made with."),
                io.Combo.Input("beta_schedule", options=BETA_SCHEDULES, default="auto",
                               tooltip="auto: the model family's own (scaled_linear for Animate Anyone / MusePose, "
                                       "what they were trained with; linear for MagicAnimate, its inference "
                                       "config); linear is also Moore's released inference config."),
                io.Int.Input("frames", default=0, min=0, max=100000,
                             tooltip="How many frames to make, from the first pose on; 0: one per pose frame."),
                io.Float.Input("pose_temperature", default=0.0, min=0.0, max=10.0, step=0.1, round=0.01,
                               optional=True,
                               tooltip="TCAN's pose temperature map (every family): the attention over time is "
                                       "softened with the distance from the skeleton, so the background averages "
                                       "over the window's frames (less flicker) while the person keeps its motion. "
                                       "Use it when the background flickers or crawls; needs pose images on black. "
                                       "0 = off, 3 = TCAN's value."),
            ],
            outputs=[io.Latent.Output(tooltip="The video's latents, scaled for VAE decoding (PoseAnimate VAE Decode "
                                              "or core VAEDecode).")],
        )

    @classmethod
    def execute(cls, models, reference, pose, seed, steps, cfg, sampler, beta_schedule, frames, context=None,
                pose_temperature=0.0):
        available = pose.frames
        frames = frames or available
        if frames > available:
            raise common.PoseAnimateError(cls.NAME, "frames", f"{frames} frames requested but 'pose' has only "
                                          f"{available}.", f"set frames to at most {available} (0 = all) or give "
                                          "more pose frames.")
        if pose.family != models.variant:
            raise common.PoseAnimateError(cls.NAME, "pose", f"it was encoded for {pose.family} models but 'models' "
                                          f"are {models.variant}.", "connect the pose input and the Sampler to the "
                                          "same Load Models node.")
        scheduler = {"sampler": sampler} | ({} if beta_schedule == "auto" else {"beta_schedule": beta_schedule})
        if models.variant == unianimate.FAMILY:
            latents = unianimate.run_sampler(cls.NAME, models, reference, pose.images, frames=frames, seed=seed,
                                             steps=steps, cfg=cfg, scheduler=scheduler, context=context,
                                             progress=_progress, pose_temperature=pose_temperature)
            return io.NodeOutput({"samples": latents / VAE_SCALE})
        if getattr(reference, "family", None) == unianimate.FAMILY:
            raise common.PoseAnimateError(cls.NAME, "reference", "it was encoded for UniAnimate models but 'models' "
                                          f"are {models.variant}.", "connect Reference Encode to the same Load "
                                          "Models node as the Sampler.")
        h, w = pose.images.shape[1] // 8, pose.images.shape[2] // 8
        if (h, w) != (reference.latent_height, reference.latent_width):
            raise common.PoseAnimateError(cls.NAME, "pose", f"the pose images are {w * 8}x{h * 8} but the reference "
                                          f"latent is from a {reference.latent_width * 8}x"
                                          f"{reference.latent_height * 8} image.", "scale the character image "
                                          "(ImageScale) and render the poses to the same width and height.")
        previewer = latent_preview.get_previewer(models.load_device, comfy.latent_formats.SD15())
        if models.family == magicanimate.FAMILY:
            opts = context_settings(models.family, context)
            noise = make_noise((frames, 4, h, w), seed, "cpu", opts)
            latents = magicanimate.sample(cls.NAME, models, reference, pose, noise=noise, steps=steps, cfg=cfg,
                                          scheduler=scheduler, context=opts, seed=seed,
                                          callback=_progress(frames, opts, steps, previewer),
                                          pose_temperature=pose_temperature)
            return io.NodeOutput({"samples": latents / VAE_SCALE})
        if isinstance(reference.features, magicanimate.AppearanceInput):
            raise common.PoseAnimateError(cls.NAME, "reference", f"it was prepared for MagicAnimate models but "
                                          f"'models' are {models.variant}.", "connect the ReferenceNet Encode node "
                                          "that takes these models (and a CLIP vision output).")
        opts = ContextOptions.from_dict(context)
        noise = make_noise((frames, 4, h, w), seed, "cpu", opts)
        rows = opts.window_batch * min(opts.length, frames) * (2 if cfg > 1 else 1)
        # ComfyUI's activation estimate for an SD1.5 UNet (model_base memory_required, factor 1).
        memory = rows * h * w * mm.dtype_size(models.compute_dtype) * 0.01 * 1024 * 1024
        unet, pose_guider = common.on_device(models.denoising_unet, models.pose_guider, memory_required=memory)
        latents = sample(unet, reference=reference.features, pose_images=pose.images, pose_guider=pose_guider,
                         noise=noise, steps=steps, cfg=cfg, scheduler=scheduler, context=opts,
                         callback=_progress(frames, opts, steps, previewer), seed=seed, family=models.variant,
                         trained_length=models.trained_length, device=models.load_device, dtype=models.compute_dtype,
                         pose_temperature=pose_temperature)
        return io.NodeOutput({"samples": latents / VAE_SCALE})


class VAEDecode(io.ComfyNode):
    NAME = "PoseAnimate VAE Decode"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateVAEDecode",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/sampling",
            description="Decodes the frames a chunk at a time, so long videos fit in memory.",
            inputs=[
                io.Vae.Input("vae", tooltip="The SD1.5 VAE (sd-vae-ft-mse) that encoded the character image."),
                io.Latent.Input("latent", tooltip="The Sampler's latents."),
                io.Int.Input("chunk", default=8, min=1, max=256, tooltip="Frames decoded at once."),
            ],
            outputs=[io.Image.Output(tooltip="The video frames.")],
        )

    @classmethod
    def execute(cls, vae, latent, chunk):
        samples = latent["samples"]
        total = samples.shape[0]
        bar = comfy.utils.ProgressBar(total)
        images = []
        for first in range(0, total, chunk):
            mm.throw_exception_if_processing_interrupted()
            decoded = vae.decode(samples[first:first + chunk])
            images.append(decoded.reshape(-1, *decoded.shape[-3:]).to(mm.intermediate_device()))
            bar.update_absolute(min(first + chunk, total), total)
        return io.NodeOutput(torch.cat(images))


NODES = [ContextWindows, Sampler, VAEDecode]
