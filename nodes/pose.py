"""Pose nodes: DWPose extraction, retargeting to the character, rendering in a model's style.

POSE_KEYPOINT is comfyui_controlnet_aux's format, so its DWPose / OpenPose output can go into
Retarget and Render, and ours into its nodes."""

import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..pose.dwpose import DETECTOR_FILE, DOWNLOAD_URLS, PEOPLE_MODES, POSE_FILE, get_dwpose, locate_model
from ..pose.keypoints import from_pose_keypoint, to_pose_keypoint
from ..pose.render import STYLES, render_frames
from ..pose.retarget import PLACEMENTS, retarget
from ..pose.smooth import SMOOTHERS, smooth_frames
from . import common

FACE = {"auto": None, "on": True, "off": False}


def dwpose_folders():
    """Where the DWPose files may be: models/dwpose, then comfyui_controlnet_aux's ckpts folder
    (AUX_ANNOTATOR_CKPTS_PATH or custom_nodes/comfyui_controlnet_aux/ckpts)."""
    return common.model_folder_paths(common.DWPOSE_FOLDER) + common.controlnet_aux_folders()


def _read_poses(node, name, value):
    try:
        return from_pose_keypoint(value)
    except ValueError as e:
        raise common.PoseAnimateError(node, name, str(e), "connect a POSE_KEYPOINT output (PoseAnimate Pose "
                                      "Extract, or comfyui_controlnet_aux's DWPose / OpenPose).") from e


class PoseExtract(io.ComfyNode):
    NAME = "PoseAnimate Pose Extract (DWPose)"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimatePoseExtract",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/pose",
            description=f"Whole-body poses (body, hands, face) with DWPose on onnxruntime. Needs {DETECTOR_FILE} and "
                        f"{POSE_FILE} in models/dwpose (comfyui_controlnet_aux's copies are found too).",
            inputs=[
                io.Image.Input("image", tooltip="The frames to read poses from: the driving video's frames, or the "
                                                "character image."),
                io.Combo.Input("people", options=list(PEOPLE_MODES), default="best",
                               tooltip="best: the most confident person per frame; all: everyone found."),
            ],
            outputs=[common.PoseKeypoint.Output(tooltip="One OpenPose-JSON frame per image (comfyui_controlnet_aux's "
                                                        "POSE_KEYPOINT); frames with nobody are empty.")],
        )

    @classmethod
    def execute(cls, image, people):
        folders = dwpose_folders()
        try:
            files = [locate_model(name, folders) for name in (DETECTOR_FILE, POSE_FILE)]
        except FileNotFoundError as e:
            where = folders[0] if folders else os.path.join(folder_paths.models_dir, common.DWPOSE_FOLDER)
            raise common.PoseAnimateError(
                cls.NAME, "image", str(e), f"download {DOWNLOAD_URLS[DETECTOR_FILE]} and {DOWNLOAD_URLS[POSE_FILE]} "
                f"into {where} (or run `poseanimate download`).") from e
        try:
            model = get_dwpose(*files)
        except ValueError as e:
            raise common.PoseAnimateError(cls.NAME, "image", str(e), "replace the damaged file.") from e
        frames = (image * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        bar = comfy.utils.ProgressBar(len(frames))

        def progress(done, total):
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        poses = model.extract(frames, people=people, progress=progress)
        return io.NodeOutput(to_pose_keypoint(poses))


class PoseRetarget(io.ComfyNode):
    NAME = "PoseAnimate Pose Retarget"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimatePoseRetarget",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/pose",
            description="Redraws the driving poses with the character's bone lengths and on the character's canvas, "
                        "so a tall dancer does not stretch a short character.",
            inputs=[
                common.PoseKeypoint.Input("driving", tooltip="Poses of the driving video."),
                common.PoseKeypoint.Input("character", tooltip="Pose of the character image (its first frame is "
                                                               "used)."),
                io.Combo.Input("placement", options=list(PLACEMENTS), default="neck",
                               tooltip="neck: the driving motion is anchored on the character's neck; driving: keep "
                                       "the driving video's position, scaled to the character's canvas."),
                io.Combo.Input("smoothing", options=list(SMOOTHERS), default="none",
                               tooltip="Temporal smoothing of the keypoints against jitter: one_euro (adapts to "
                                       "speed) or savgol (Savitzky-Golay); missing points stay missing."),
            ],
            outputs=[common.PoseKeypoint.Output(tooltip="The retargeted poses, on the character's canvas.")],
        )

    @classmethod
    def execute(cls, driving, character, placement, smoothing):
        driving_frames = _read_poses(cls.NAME, "driving", driving)
        character_frames = _read_poses(cls.NAME, "character", character)
        if not character_frames or not character_frames[0].people:
            raise common.PoseAnimateError(cls.NAME, "character", "no person was found in the character pose.",
                                          "use a character image that shows the person (full body works best).")
        try:
            frames = retarget(driving_frames, character_frames[0], placement=placement)
        except ValueError as e:
            raise common.PoseAnimateError(cls.NAME, "character", str(e), "use a character image that shows the "
                                          "whole person (both shoulders at least), or placement 'driving'.") from e
        if smoothing != "none":
            frames = smooth_frames(frames, smoothing)
        return io.NodeOutput(to_pose_keypoint(frames))


class PoseRender(io.ComfyNode):
    NAME = "PoseAnimate Pose Render"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseAnimatePoseRender",
            display_name=cls.NAME,
            category=f"{common.CATEGORY}/pose",
            description="Draws poses the way each PoseGuider was trained to see them.",
            inputs=[
                common.PoseKeypoint.Input("pose", tooltip="Poses to draw (POSE_KEYPOINT from any pack)."),
                io.Int.Input("width", default=512, min=8, max=8192, step=8,
                             tooltip="Image width: the video's width (a multiple of 8 for the PoseGuider)."),
                io.Int.Input("height", default=768, min=8, max=8192, step=8,
                             tooltip="Image height: the video's height (a multiple of 8 for the PoseGuider)."),
                io.Combo.Input("style", options=list(STYLES), default="moore",
                               tooltip="moore: for Animate Anyone (body, hands, face). musepose: for MusePose (no "
                                       "face, limb width from length, red and blue swapped)."),
                io.Boolean.Input("body", default=True, tooltip="Draw the body skeleton."),
                io.Boolean.Input("hands", default=True, tooltip="Draw the hands."),
                io.Combo.Input("face", options=list(FACE), default="auto",
                               tooltip="Draw the face points; auto: the style's default (on for moore, off for "
                                       "musepose)."),
            ],
            outputs=[io.Image.Output(tooltip="One pose image per frame.")],
        )

    @classmethod
    def execute(cls, pose, width, height, style, body, hands, face):
        frames = _read_poses(cls.NAME, "pose", pose)
        images = render_frames(frames, width, height, style, body=body, hands=hands, face=FACE[face])
        return io.NodeOutput(torch.from_numpy(images).float() / 255)


NODES = [PoseExtract, PoseRetarget, PoseRender]
