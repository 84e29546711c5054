"""`poseanimate animate --variant unianimate`: UniAnimate without ComfyUI (its UNet, OpenCLIP's towers from
open_clip_pytorch_model.bin, the VAE of the SD2.1 checkpoint), on tiny models in the download layout."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import cli_fixtures as fx
from open_clip_weights import weight
from poseanimate.cli import download as dl
from poseanimate.cli import pipeline
from poseanimate.cli.pipeline import JobError
from poseanimate.models.open_clip import TextTower, VisionTower
from tiny_models import person_frames, write_dwpose, write_unianimate

CONTEXT = 64  # the tiny UNet's context width = OpenCLIP's embedding and text widths here
SIZE = dict(width=64, height=96)
FAST = dict(steps=2, cfg=2.5, device="cpu", dtype="fp32", context={"length": 4, "overlap": 2}, progress=False)


def write_open_clip(path):
    """A tiny open_clip state dict (image tower at 224x224, patch 32) in open_clip's key layout."""
    towers = {"visual.": VisionTower(64, 1, 1, 32, 224, CONTEXT, device="meta"),
              "": TextTower(CONTEXT, 2, 1, 49408, 77, device="meta")}
    shapes = {prefix + k: v.shape for prefix, tower in towers.items() for k, v in tower.state_dict().items()}
    shapes.update({"text_projection": (CONTEXT, CONTEXT), "logit_scale": ()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({k: weight(k, s) for k, s in shapes.items()}, path)


def write_checkpoint(path):
    """An SD-style single-file checkpoint holding a tiny VAE (and a stray UNet key, as the real one has more)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32,) * 4, layers_per_block=1, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    sd = {**fx.ldm_vae(vae.state_dict(), 4), "model.diffusion_model.out.2.bias": torch.zeros(4)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": sd, "global_step": 875000}, path)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("ua-cli")
    models = root / "models"
    write_unianimate(str(models / dl.networks_dir("unianimate") / "unianimate_16f_32f_non_ema_223000.pth"),
                     context_dim=CONTEXT)
    write_open_clip(str(models / dl.UNIANIMATE["clip_vision"][0].dest))
    write_checkpoint(str(models / dl.UNIANIMATE["vae"][0].dest))
    write_dwpose(str(models / dl.DWPOSE_DIR))
    fx.write_character(str(root / "character.png"), 64, 96)
    fx.write_video(str(root / "driving.mp4"), person_frames(5, 64, 96), 8)
    poses = root / "poses"
    poses.mkdir()
    for i, frame in enumerate(person_frames(4, 64, 96, seed=3)):
        Image.fromarray(frame).save(poses / f"{i:04d}.png")
    Image.fromarray(person_frames(1, 64, 96, seed=5)[0]).save(poses / "ref_pose.jpg")
    return root


def test_animates_a_driving_video(work, tmp_path):
    out = pipeline.animate_video(str(work / "character.png"), str(work / "driving.mp4"), str(tmp_path / "out.mp4"),
                                 models=str(work / "models"), variant="unianimate", **SIZE, **FAST)
    assert out["frames"] == 5 and out["variant"] == "unianimate"
    frames, fps, _ = fx.read_video(out["path"])
    assert frames.shape == (5, 96, 64, 3) and fps == 8


def capture(monkeypatch):
    """Run the job up to the engine and record what it is given (the engine itself is tested elsewhere)."""
    from poseanimate.sampling import engine

    seen = {}

    def fake_animate(models, **inputs):
        seen.update(inputs, family=models.family)
        frames, (_, c, h, w) = inputs["pose_images"].shape[0], inputs["reference_latents"].shape
        return torch.zeros(frames, c, h, w)

    monkeypatch.setattr(engine, "animate", fake_animate)
    return seen


def test_a_unianimate_pose_folder_gives_the_reference_pose_and_no_dwpose_is_needed(work, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(work / "models", models, ignore=shutil.ignore_patterns(dl.DWPOSE_DIR))
    seen = capture(monkeypatch)
    out = pipeline.animate_video(str(work / "character.png"), str(work / "poses"), str(tmp_path / "out.mp4"),
                                 models=str(models), variant="unianimate", **SIZE, **FAST)
    assert out["frames"] == 4  # ref_pose.jpg is not a driving frame
    expected = np.array(Image.open(work / "poses" / "ref_pose.jpg").convert("RGB"))
    assert torch.equal(seen["reference_pose"], torch.from_numpy(expected))
    assert seen["pose_images"].shape == (4, 96, 64, 3)
    assert seen["image_embeds"].shape == (1, CONTEXT) and seen["text_embeds"].shape == (1, 77, CONTEXT)
    assert seen["reference_latents"].shape == (1, 4, 12, 8) and seen["reference_image"].shape == (96, 64, 3)
    assert seen["first_frame"] is False and seen["pose_temperature"] == 0


def test_family_defaults_and_first_frame(work, tmp_path, monkeypatch):
    seen = capture(monkeypatch)
    fast = {k: v for k, v in FAST.items() if k not in ("steps", "cfg")}
    pipeline.animate_video(str(work / "character.png"), str(work / "driving.mp4"), str(tmp_path / "out.mp4"),
                           models=str(work / "models"), variant="unianimate", first_frame=True, pose_temperature=3.0,
                           **SIZE, **fast)
    assert (seen["steps"], seen["cfg"], seen["first_frame"], seen["pose_temperature"]) == (30, 2.5, True, 3.0)
    # the character's own pose (DWPose stand-in), drawn in UniAnimate's style at the video size
    assert seen["reference_pose"].shape == (96, 64, 3) and seen["reference_pose"].max() > 0


@pytest.mark.parametrize("options, message", [
    (dict(variant="moore", first_frame=True), "--first-frame is UniAnimate's"),
])
def test_options_other_families_do_not_have(work, tmp_path, options, message):
    with pytest.raises(JobError, match=message):
        pipeline.animate_video(str(work / "character.png"), str(work / "driving.mp4"), str(tmp_path / "out.mp4"),
                               models=str(work / "models"), **SIZE, **FAST, **options)
    assert not os.listdir(tmp_path)


def test_missing_files_are_listed_with_the_download_command(work, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(work / "models", models, ignore=shutil.ignore_patterns("clip_vision"))
    with pytest.raises(JobError, match=r"models missing in .*clip_vision.*poseanimate download --variant unianimate"):
        pipeline.animate_video(str(work / "character.png"), str(work / "driving.mp4"), str(tmp_path / "o.mp4"),
                               models=str(models), variant="unianimate", **SIZE, **FAST)


def test_a_checkpoint_without_a_vae_is_named(work, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(work / "models", models)
    torch.save({"state_dict": {"model.diffusion_model.out.2.bias": torch.zeros(4)}},
               models / dl.UNIANIMATE["vae"][0].dest)
    with pytest.raises(JobError, match=r"v2-1_512-ema-pruned.ckpt holds no VAE"):
        pipeline.animate_video(str(work / "character.png"), str(work / "driving.mp4"), str(tmp_path / "o.mp4"),
                               models=str(models), variant="unianimate", **SIZE, **FAST)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".mp4")]


def test_manual_download_instructions_name_modelscope(tmp_path):
    files = [f for group in dl.remotes("unianimate").values() for f in group]
    text = dl.manual_instructions(str(tmp_path), files)
    assert "iic/unianimate" in text and "open_clip_pytorch_model.bin" in text
    assert "ModelScope" not in dl.manual_instructions(str(tmp_path), dl.remotes("moore")["vae"])


def test_convert_a_unianimate_folder_to_half_precision(work, tmp_path):
    """`poseanimate convert` takes UniAnimate's UNet too; the converted folder loads as the same family."""
    from poseanimate.cli.convert import convert
    from poseanimate.models.loading import load_models

    src = tmp_path / "unianimate"
    shutil.copytree(work / "models" / dl.networks_dir("unianimate"), src)
    written = convert(str(src), report=lambda line: None)
    assert [os.path.basename(p) for p in written] == ["unianimate_16f_32f_non_ema_223000.safetensors"]
    half = load_models(str(tmp_path / "unianimate-fp16"), device="cpu", dtype=torch.float32)
    full = load_models(str(src), device="cpu", dtype=torch.float32)
    assert half.family == "unianimate"
    for (k, a), b in zip(full.unet.state_dict().items(), half.unet.state_dict().values()):
        assert torch.equal(a.half().float(), b), k
