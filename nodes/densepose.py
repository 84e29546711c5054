"""DensePose Extract: MagicAnimate's control images from a video's frames.

comfyui_controlnet_aux's DensePose Estimator (cmap "Viridis (MagicAnimate)") draws the same images; its
output is accepted as control images as it is (pose.densepose.fit_images brings it to the video size)."""

import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..pose.densepose import (DETECT_RESOLUTION, DOWNLOAD_URLS, FITS, MODEL_FILE, MODEL_FILES, get_densepose,
                              locate_model)
from . import common


def densepose_folders():
    """Where the DensePose TorchScript may be: models/densepose, then comfyui_controlnet_aux's ckpts folder."""
    return common.model_folder_paths(common.DENSEPOSE_FOLDER) + common.controlnet_aux_folders()


class DensePoseExtract(io.ComfyNode):
    NAME = "PoseAnimate DensePose Extract"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimateDensePoseExtract",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/pose",
            description=f"DensePose control images for MagicAnimate: each body part in its colour (viridis) on "
                        f"viridis' dark purple, as MagicAnimate's DensePose videos. Needs {MODEL_FILE} in "
                        "models/densepose (comfyui_controlnet_aux's copy is found too). comfyui_controlnet_aux's "
                        "DensePose Estimator output (Viridis) can be used instead of this node's.",
            inputs=[
                io.Image.Input("image", tooltip="The driving video's frames."),
                io.Int.Input("width", default=512, min=8, max=8192, step=8,
                             tooltip="Control image width: the video's width (a multiple of 8)."),
                io.Int.Input("height", default=512, min=8, max=8192, step=8,
                             tooltip="Control image height: the video's height (a multiple of 8)."),
                io.Combo.Input("fit", options=list(FITS), default="pad",
                               tooltip="When the frames' shape differs from width x height: pad keeps the whole "
                                       "frame (bands in the background colour), crop fills the image and cuts the "
                                       "overflow, stretch resizes (as MagicAnimate's own scripts do)."),
                io.Int.Input("resolution", default=DETECT_RESOLUTION, min=64, max=2048, step=64,
                             tooltip="Short side of the frames as the DensePose model sees them; larger finds "
                                     "smaller people and is slower."),
                io.Combo.Input("model", options=list(MODEL_FILES), default=MODEL_FILE,
                               tooltip="The DensePose TorchScript file (R50 is the one MagicAnimate users run; R101 "
                                       "is larger)."),
            ],
            outputs=[io.Image.Output(tooltip="One control image per frame, width x height.")],
        )

    @classmethod
    def execute(cls, image, width, height, fit, resolution, model):
        folders = densepose_folders()
        try:
            path = locate_model(model, folders)
        except FileNotFoundError as e:
            where = folders[0] if folders else os.path.join(folder_paths.models_dir, common.DENSEPOSE_FOLDER)
            raise common.PoseAnimateError(
                cls.NAME, "model", str(e), f"download {DOWNLOAD_URLS[model]} into {where} (or run `poseanimate "
                "download --variant magicanimate`).") from e
        if image.ndim != 4 or image.shape[-1] != 3 or image.shape[0] == 0:
            raise common.PoseAnimateError(cls.NAME, "image", f"expected RGB frames [frames, height, width, 3], got "
                                          f"shape {tuple(image.shape)}.", "connect a video's frames (IMAGE).")
        device = mm.get_torch_device()
        try:
            densepose = get_densepose(path, device)
        except ValueError as e:
            raise common.PoseAnimateError(cls.NAME, "model", str(e), "replace the damaged file.") from e
        frames = (image * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        bar = comfy.utils.ProgressBar(len(frames))

        def progress(done, total):
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        try:
            images = densepose.extract(frames, width, height, fit=fit, resolution=resolution, progress=progress)
        except ValueError as e:
            raise common.PoseAnimateError(cls.NAME, "model", str(e),
                                          f"use {MODEL_FILE} from {DOWNLOAD_URLS[MODEL_FILE]}.") from e
        finally:
            densepose.to(mm.unet_offload_device())
        return io.NodeOutput(torch.from_numpy(images).float() / 255)


NODES = [DensePoseExtract]
