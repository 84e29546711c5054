"""The ComfyUI nodes, run in this process against the ComfyUI checkout named by COMFYUI_PATH
(skipped without it): schemas, execution on the tiny parity models, progress/preview/cancel,
model management, and the errors users meet."""

import asyncio
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import poseanimate
from conftest import DATA, MOORE_TINY, animate_anyone_folder, read_rgb

CHAIN_TOLERANCE = 1e-4  # node chain vs poseanimate.animate: ComfyUI's attention kernel against SDPA, float32
FIXED_NAMES = {
    "PoseAnimateLoadModels": "PoseAnimate Load Models",
    "PoseAnimatePoseExtract": "PoseAnimate Pose Extract (DWPose)",
    "PoseAnimateReferenceEncode": "PoseAnimate ReferenceNet Encode",
    "PoseAnimateContextWindows": "PoseAnimate Context Windows",
    "PoseAnimateSampler": "PoseAnimate Sampler",
}


@pytest.fixture(scope="module")
def N(comfy):
    from poseanimate.nodes import common, extension, models, pose, sampling

    listed = asyncio.run(extension.PoseAnimateExtension().get_node_list())
    return SimpleNamespace(listed={n.GET_SCHEMA().node_id: n for n in listed}, common=common, models=models,
                           pose=pose, sampling=sampling)


@pytest.fixture
def folders(N, tmp_path, monkeypatch):
    """Empty animate_anyone / dwpose / custom_nodes folders in place of the checkout's."""
    import folder_paths

    table = dict(folder_paths.folder_names_and_paths)
    for name in ("animate_anyone", "dwpose", "custom_nodes"):
        (tmp_path / name).mkdir()
        table[name] = ([str(tmp_path / name)], table[name][1])
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", table)
    monkeypatch.delenv("AUX_ANNOTATOR_CKPTS_PATH", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def inputs():
    meta = json.load(open(os.path.join(MOORE_TINY, "meta.json")))
    tensors = load_file(os.path.join(MOORE_TINY, "tensors.safetensors"))
    poses = np.stack([read_rgb(os.path.join(MOORE_TINY, f"pose_{i:03d}.png")) for i in range(6)])
    poses = torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255
    # Half the fixture's size and frames: the same code paths at a quarter of the CPU time.
    return SimpleNamespace(latents=torch.nn.functional.interpolate(tensors["ref_latents"], size=(16, 8)),
                           embeds=tensors["clip_image_embeds"],
                           poses=torch.nn.functional.interpolate(poses, size=(128, 64)).permute(0, 2, 3, 1))


@pytest.fixture(scope="module")
def model_root(N, tmp_path_factory):
    """models/animate_anyone with the moore-tiny parity networks in it, for this module."""
    root = tmp_path_factory.mktemp("animate_anyone")
    os.symlink(MOORE_TINY, root / "moore-tiny")
    with animate_anyone_folder(root):
        yield root


@pytest.fixture(scope="module")
def loaded(N, model_root):
    assert N.models.LoadModels.GET_SCHEMA().inputs[0].options == ["moore-tiny"]
    assert N.models.LoadModels.validate_inputs(folder="moore-tiny") is True
    return run(N.models.LoadModels, folder="moore-tiny", dtype="fp32")


def run(node, **kwargs):
    return node.execute(**kwargs).result[0]


def encode(N, loaded, inputs, poses=None, embeds=None):
    ref = run(N.models.ReferenceEncode, models=loaded, latent={"samples": inputs.latents / 0.18215},
              clip_vision_output=SimpleNamespace(image_embeds=inputs.embeds if embeds is None else embeds))
    pose = run(N.models.PoseGuiderEncode, models=loaded, pose_images=inputs.poses if poses is None else poses)
    return ref, pose


def context(N, **overrides):
    args = dict(length=4, overlap=2, stride=1, schedule="static", fuse="pyramid", closed_loop="auto",
                window_batch=1, freenoise=False) | overrides
    return run(N.sampling.ContextWindows, **args)


def sampler(N, loaded, ref, pose, **overrides):
    args = dict(models=loaded, reference=ref, pose=pose, seed=7, steps=2, cfg=3.5, sampler="ddim",
                beta_schedule="linear", frames=0, context=context(N)) | overrides
    return run(N.sampling.Sampler, **args)


def test_schemas(N):
    assert len(N.listed) == 10
    for node_id, node in N.listed.items():
        schema = node.GET_SCHEMA()
        assert node_id.startswith("PoseAnimate") and schema.category.startswith("PoseAnimate")
        assert schema.display_name.startswith("PoseAnimate ") and schema.description
        untipped = [x.id for x in schema.inputs + schema.outputs if not x.tooltip]
        assert not untipped, f"{node_id}: no tooltip on {untipped}"
        assert FIXED_NAMES.get(node_id, schema.display_name) == schema.display_name
    outputs = {i: [o.io_type for o in n.GET_SCHEMA().outputs] for i, n in N.listed.items()}
    assert outputs["PoseAnimateLoadModels"] == ["POSEANIMATE_MODELS"]
    assert outputs["PoseAnimateReferenceEncode"] == ["POSEANIMATE_REFERENCE"]
    assert outputs["PoseAnimatePoseGuiderEncode"] == ["POSEANIMATE_POSE"]
    assert outputs["PoseAnimateContextWindows"] == ["POSEANIMATE_CONTEXT"]
    assert outputs["PoseAnimatePoseExtract"] == outputs["PoseAnimatePoseRetarget"] == ["POSE_KEYPOINT"]
    assert outputs["PoseAnimateSampler"] == ["LATENT"] and outputs["PoseAnimateVAEDecode"] == ["IMAGE"]
    ctx = {i.id: i for i in N.listed["PoseAnimateContextWindows"].GET_SCHEMA().inputs}
    assert list(ctx) == ["length", "overlap", "stride", "schedule", "fuse", "closed_loop", "window_batch", "freenoise"]
    assert [(ctx[k].default, ctx[k].min) for k in ("length", "overlap", "stride")] == [(24, 1), (4, 0), (1, 1)]
    assert (ctx["schedule"].options, ctx["schedule"].default) == (["static", "uniform", "looped", "moore"], "static")
    assert (ctx["fuse"].options, ctx["fuse"].default) == (["flat", "pyramid", "overlap-linear"], "pyramid")
    assert (ctx["closed_loop"].options, ctx["closed_loop"].default) == (["auto", "on", "off"], "auto")
    assert (ctx["window_batch"].default, ctx["freenoise"].default) == (1, False)
    samp = {i.id: i for i in N.listed["PoseAnimateSampler"].GET_SCHEMA().inputs}
    assert samp["context"].optional and (samp["steps"].default, samp["cfg"].default) == (20, 3.5)
    assert (samp["sampler"].default, samp["beta_schedule"].options) == ("ddim", ["auto", "scaled_linear", "linear"])
    assert list(samp)[-1] == "pose_temperature"  # appended: saved workflows keep their widget values
    ptm = samp["pose_temperature"]
    assert ptm.optional and (ptm.default, ptm.min) == (0, 0)


def test_context_windows_maps_to_options(N):
    from poseanimate.sampling.context import ContextOptions

    assert context(N, closed_loop="auto") == ContextOptions(length=4, overlap=2)
    assert context(N, schedule="looped", closed_loop="on", window_batch=3, freenoise=True) == ContextOptions(
        length=4, overlap=2, schedule="looped", closed_loop=True, window_batch=3, freenoise=True)
    assert context(N, closed_loop="off").closed_loop is False
    message = N.sampling.ContextWindows.validate_inputs(length=8, overlap=8)
    assert "PoseAnimate Context Windows" in message and "'overlap'" in message and "Fix:" in message


def test_models_are_comfyui_managed(N, loaded, comfy):
    import comfy.ops
    from comfy.ldm.modules.attention import optimized_attention
    from comfy.model_patcher import ModelPatcher

    from poseanimate.models.attention import Attention

    assert loaded.variant == "moore" and loaded.embed_dim == 32 and loaded.compute_dtype == torch.float32
    for patcher in (loaded.reference_net, loaded.denoising_unet, loaded.pose_guider):
        assert isinstance(patcher, ModelPatcher) and patcher.load_device == comfy.model_management.get_torch_device()
        layers = [m for m in patcher.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                                      torch.nn.GroupNorm, torch.nn.LayerNorm))]
        assert layers and all(isinstance(m, comfy.ops.CastWeightBiasOp) for m in layers)
        assert all(m.attention_fn is optimized_attention for m in patcher.model.modules() if isinstance(m, Attention))


def test_half_weights_are_cast_where_the_device_cannot_compute_them(N, model_root, inputs):
    import comfy.model_management as mm
    import comfy.ops

    models = run(N.models.LoadModels, folder="moore-tiny", dtype="fp16")
    expected = mm.unet_manual_cast(torch.float16, mm.get_torch_device()) or torch.float16
    assert models.compute_dtype == expected
    assert models.denoising_unet.model.conv_in.weight.dtype == torch.float16
    if expected != torch.float16:
        assert isinstance(models.denoising_unet.model.conv_in, comfy.ops.manual_cast.Conv2d)
    ref, pose = encode(N, models, inputs)
    assert all(torch.isfinite(t).all() for t in ref.features.tokens.values()) and pose.family == "moore"


def test_chain_matches_animate(N, loaded, inputs, tiny_models, comfy):
    import comfy.model_management as mm

    ref, pose = encode(N, loaded, inputs)
    assert not any(m.model is loaded.reference_net for m in mm.current_loaded_models), "ReferenceNet left loaded"
    assert pose.images is inputs.poses, "the pose images are handed on, not copied"
    opts = context(N, schedule="uniform", window_batch=2)
    out = sampler(N, loaded, ref, pose, steps=2, context=opts)["samples"]
    # The VAE hands over unscaled latents; the node scales them back (the same rounding here).
    scaled = inputs.latents / 0.18215 * 0.18215
    expected = poseanimate.animate(tiny_models, reference_latents=scaled, image_embeds=inputs.embeds,
                                   pose_images=inputs.poses, seed=7, steps=2, cfg=3.5,
                                   scheduler={"sampler": "ddim", "beta_schedule": "linear"}, context=opts)
    assert out.shape == (6, 4, 16, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out * 0.18215, expected, atol=CHAIN_TOLERANCE, rtol=0)


def test_sampler_pose_temperature_matches_animate(N, loaded, inputs, tiny_models):
    # the fixture's pose images have a noisy grey background; the map needs pixels that are black
    poses = inputs.poses * (inputs.poses.mean(-1, keepdim=True) > 0.55)
    ref, pose = encode(N, loaded, inputs, poses=poses)
    opts = context(N)
    plain = sampler(N, loaded, ref, pose, context=opts)["samples"]
    out = sampler(N, loaded, ref, pose, context=opts, pose_temperature=3.0)["samples"]
    scaled = inputs.latents / 0.18215 * 0.18215
    expected = poseanimate.animate(tiny_models, reference_latents=scaled, image_embeds=inputs.embeds,
                                   pose_images=poses, seed=7, steps=2, cfg=3.5,
                                   scheduler={"sampler": "ddim", "beta_schedule": "linear"}, context=opts,
                                   pose_temperature=3.0)
    torch.testing.assert_close(out * 0.18215, expected, atol=CHAIN_TOLERANCE, rtol=0)
    assert (out - plain).abs().max() > 1e-3


def test_sampler_progress_and_preview(N, loaded, inputs, monkeypatch):
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append((value, total, preview)))
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    ref, pose = encode(N, loaded, inputs)
    sampler(N, loaded, ref, pose, steps=2)
    # 6 frames, static windows of 4 overlapping by 2: 2 windows per step, 2 steps.
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    previews = [c[2] for c in calls if c[2] is not None]
    assert len(previews) == 2 and previews[0][0] == "JPEG" and previews[0][1].size == (8, 16)


def test_sampler_cancels_within_one_window(N, loaded, inputs, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    calls = []

    def hook(value, total, preview, node_id=None):
        calls.append(value)
        mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    ref, pose = encode(N, loaded, inputs)
    with pytest.raises(mm.InterruptProcessingException):
        sampler(N, loaded, ref, pose, steps=4, context=context(N, length=2, overlap=0))
    assert calls == [1] and not mm.processing_interrupted()


def test_errors_name_node_input_and_fix(N, loaded, inputs):
    ref, pose = encode(N, loaded, inputs)
    with pytest.raises(ValueError, match=r"PoseAnimate Sampler: input 'frames': 7 frames requested but .* 6\..*Fix:"):
        sampler(N, loaded, ref, pose, frames=7)
    small = torch.nn.functional.interpolate(inputs.poses.permute(0, 3, 1, 2), size=(64, 32)).permute(0, 2, 3, 1)
    _, small_pose = encode(N, loaded, inputs, poses=small)
    with pytest.raises(ValueError, match=r"PoseAnimate Sampler: input 'pose': .* 32x64 .* 64x128 image\..*Fix:"):
        sampler(N, loaded, ref, small_pose)
    with pytest.raises(ValueError, match=r"PoseGuider Encode: input 'pose_images': .* 60x100, not multiples of 8"):
        run(N.models.PoseGuiderEncode, models=loaded, pose_images=torch.zeros(2, 100, 60, 3))
    with pytest.raises(ValueError, match=r"ReferenceNet Encode: input 'clip_vision_output': .*\[1, 768\].*\[1, 32\]"):
        encode(N, loaded, inputs, embeds=torch.zeros(1, 768))
    with pytest.raises(ValueError, match=r"ReferenceNet Encode: input 'latent': it holds 2 images"):
        run(N.models.ReferenceEncode, models=loaded, latent={"samples": torch.zeros(2, 4, 16, 8)},
            clip_vision_output=SimpleNamespace(image_embeds=inputs.embeds))


def test_missing_and_wrong_model_files(N, folders):
    import folder_paths

    load = N.models.LoadModels
    assert load.GET_SCHEMA().inputs[0].options == []
    message = load.validate_inputs(folder="moore")
    for part in ("PoseAnimate Load Models: input 'folder'", str(folders / "animate_anyone"), "huggingface.co",
                 "poseanimate download --variant moore --comfyui " + os.path.dirname(folder_paths.models_dir)):
        assert part in message
    broken = folders / "animate_anyone" / "broken"
    broken.mkdir()
    for name in ("reference_unet.pth", "denoising_unet.pth", "motion_module.pth"):
        shutil.copy(os.path.join(MOORE_TINY, name), broken)
    torch.save({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)},
               broken / "pose_guider.pth")
    assert load.validate_inputs(folder="broken") is True
    with pytest.raises(ValueError, match=r"Load Models: input 'folder': .*no pose_guider file.*pose_guider.pth: a VAE"
                                         r".*Fix: put the four files") as error:
        run(load, folder="broken", dtype="auto")
    message = str(error.value)
    assert message.count("patrolli/AnimateAnyone") == 1 and message.count("TMElyralab/MusePose") == 1, message
    assert ".." not in message and "\n" not in message


def _standin_dwpose(folder):
    from poseanimate.pose import standin

    folder.mkdir(parents=True, exist_ok=True)
    standin.build_detector(folder / "yolox_l.onnx", [standin.ChannelBox(2)])
    standin.build_pose_model(folder / "dw-ll_ucoco_384.onnx", "blob")


def _frames(count=3, width=160, height=224):
    import cv2

    frames = np.zeros((count, height, width, 3), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for i, frame in enumerate(frames):
        cv2.rectangle(frame, (20 + 4 * i, 30), (120 + 4 * i, 200), (200, 0, 0), 2)
        blob = np.exp(-((xx - 70 - 4 * i) ** 2 + (yy - 80) ** 2) / 8.0)[..., None] * np.array([255, 0, 255])
        frame[:] = np.maximum(frame, blob.round().astype(np.uint8))
    return torch.from_numpy(frames).float() / 255


def test_pose_extract(N, folders, monkeypatch):
    from poseanimate.pose import dwpose

    extract = N.pose.PoseExtract
    with pytest.raises(ValueError, match=r"Pose Extract \(DWPose\): input 'image': .*yolox_l.onnx.*not found.*"
                                         r"Fix: download https://huggingface.co/yzd-v/DWPose.*" + str(folders / "dwpose")):
        run(extract, image=_frames(), people="best")
    _standin_dwpose(folders / "custom_nodes" / "comfyui_controlnet_aux" / "ckpts" / "yzd-v" / "DWPose")
    monkeypatch.setattr(dwpose, "_chosen_providers", ["CPUExecutionProvider"])
    out = run(extract, image=_frames(), people="best")
    assert len(out) == 3 and (out[0]["canvas_width"], out[0]["canvas_height"]) == (160, 224)
    for i, frame in enumerate(out):
        (person,) = frame["people"]
        body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
        np.testing.assert_allclose(body[0], [70 + 4 * i, 80, 1.0], atol=1.0)
    import comfy.model_management as mm
    import comfy.utils

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda *a, **k: mm.interrupt_current_processing(True))
    with pytest.raises(mm.InterruptProcessingException):
        run(extract, image=_frames(), people="all")
    dwpose.release_dwpose()


def test_pose_extract_says_which_frames_are_empty(N, folders, monkeypatch):
    """Nobody in any frame: an error naming the node and input (as the command line refuses such a
    video); nobody in some: the node shows it on the page (ComfyUI's progress text), not only the log."""
    import sys

    from poseanimate.pose import dwpose

    _standin_dwpose(folders / "dwpose")
    monkeypatch.setattr(dwpose, "_chosen_providers", ["CPUExecutionProvider"])
    sent = []
    # ComfyUI's server module (the page's connection) only exists in a running ComfyUI; the
    # integration test checks the message reaches a real page's websocket.
    page = SimpleNamespace(send_progress_text=lambda text, node_id, sid=None: sent.append((node_id, text)))
    monkeypatch.setitem(sys.modules, "server", SimpleNamespace(PromptServer=SimpleNamespace(instance=page)))
    extract = N.pose.PoseExtract.PREPARE_CLASS_CLONE({"UNIQUE_ID": "6"})
    frames = _frames(6)
    frames[1:3] = 0
    frames[5] = 0
    out = run(extract, image=frames, people="best")
    assert [bool(frame["people"]) for frame in out] == [True, False, False, True, True, False]
    assert sent == [("6", "DWPose found nobody in 3 of 6 frames (frames 1-2, 5); those frames are drawn empty.")]
    sent.clear()
    run(extract, image=_frames(2), people="all")
    assert sent == []
    with pytest.raises(ValueError, match=r"^PoseAnimate Pose Extract \(DWPose\): input 'image': DWPose found no person "
                                         r"in any of its 4 frames\. Fix: connect frames where one person"):
        run(extract, image=torch.zeros(4, 224, 160, 3), people="best")
    with pytest.raises(ValueError, match=r"input 'image': DWPose found no person in the image\. Fix:"):
        run(extract, image=torch.zeros(1, 224, 160, 3), people="all")
    assert sent == []
    dwpose.release_dwpose()


def test_retarget_and_render(N):
    from poseanimate.pose.keypoints import from_pose_keypoint
    from poseanimate.pose.render import render_frames

    driving = json.load(open(os.path.join(DATA, "render", "full_512x768.json")))
    character = [{**driving[0], "canvas_width": 256, "canvas_height": 384}]
    character[0]["people"] = [{k: [v * 0.5 if i % 3 != 2 else v for i, v in enumerate(vals)] if vals else vals
                               for k, vals in p.items() if k.endswith("_2d")} for p in driving[0]["people"]]
    out = run(N.pose.PoseRetarget, driving=driving * 2, character=character, placement="neck", smoothing="one_euro")
    assert len(out) == 2 and (out[0]["canvas_width"], out[0]["canvas_height"]) == (256, 384)
    np.testing.assert_allclose(out[0]["people"][0]["pose_keypoints_2d"], character[0]["people"][0]["pose_keypoints_2d"],
                               atol=1e-6)
    images = run(N.pose.PoseRender, pose=out, width=128, height=192, style="musepose", body=True, hands=False,
                 face="auto")
    expected = render_frames(from_pose_keypoint(out), 128, 192, "musepose", body=True, hands=False, face=None)
    assert images.shape == (2, 192, 128, 3) and images.dtype == torch.float32
    assert torch.equal((images * 255).round().to(torch.uint8), torch.from_numpy(expected))
    with pytest.raises(ValueError, match=r"Pose Retarget: input 'character': no person"):
        run(N.pose.PoseRetarget, driving=driving, character=[{"people": [], "canvas_width": 8, "canvas_height": 8}],
            placement="neck", smoothing="none")
    with pytest.raises(ValueError, match=r"Pose Render: input 'pose': .*canvas_width.*Fix:"):
        run(N.pose.PoseRender, pose=[{"people": []}], width=64, height=64, style="moore", body=True, hands=True,
            face="on")


def test_unianimate_style_and_retarget_method(N):
    from poseanimate.pose.keypoints import from_pose_keypoint
    from poseanimate.pose.render import render_frames
    from poseanimate.pose.retarget import retarget

    retarget_inputs = [i.id for i in N.pose.PoseRetarget.GET_SCHEMA().inputs]
    assert retarget_inputs == ["driving", "character", "placement", "smoothing", "method"]
    method = N.pose.PoseRetarget.GET_SCHEMA().inputs[-1]
    assert (method.options, method.default, method.optional) == (["bones", "unianimate"], "bones", True)
    render_inputs = {i.id: i for i in N.pose.PoseRender.GET_SCHEMA().inputs}
    assert render_inputs["style"].options == ["moore", "musepose", "unianimate"]
    assert list(render_inputs) == ["pose", "width", "height", "style", "body", "hands", "face"]

    driving = json.load(open(os.path.join(DATA, "render", "full_512x768.json")))
    character = [{**driving[0], "canvas_width": 600, "canvas_height": 900}]
    out = run(N.pose.PoseRetarget, driving=driving * 2, character=character, placement="neck", smoothing="none",
              method="unianimate")
    expected = retarget(from_pose_keypoint(driving * 2), from_pose_keypoint(character)[0], method="unianimate")
    for frame, want in zip(from_pose_keypoint(out), expected):
        np.testing.assert_allclose(frame.people[0].body, want.people[0].body, equal_nan=True)
    images = run(N.pose.PoseRender, pose=out, width=64, height=96, style="unianimate", body=True, hands=True,
                 face="auto")
    assert torch.equal((images * 255).round().to(torch.uint8),
                       torch.from_numpy(render_frames(from_pose_keypoint(out), 64, 96, "unianimate")))
    with pytest.raises(ValueError, match=r"Pose Retarget: input 'method': .*placement='neck'.*Fix: use method 'bones'"):
        run(N.pose.PoseRetarget, driving=driving, character=character, placement="driving", smoothing="none",
            method="unianimate")


def test_vae_decode_in_chunks(N, monkeypatch):
    import comfy.utils

    class FakeVAE:
        def __init__(self):
            self.batches = []

        def decode(self, samples):
            self.batches.append(samples.shape[0])
            return samples[:, :3].repeat_interleave(8, 2).repeat_interleave(8, 3).movedim(1, -1)

    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, p, node_id=None: calls.append((v, t)))
    vae, latent = FakeVAE(), torch.randn(7, 4, 4, 3)
    images = run(N.sampling.VAEDecode, vae=vae, latent={"samples": latent}, chunk=3)
    assert vae.batches == [3, 3, 1] and calls == [(3, 7), (6, 7), (7, 7)]
    assert images.shape == (7, 32, 24, 3) and torch.equal(images[:, ::8, ::8], latent[:, :3].movedim(1, -1))
