"""The engine against numbers produced by the reference implementation (see tests/data/parity)."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import poseanimate
from conftest import DATA, MOORE_TINY, read_rgb

TOLERANCE = 1e-3  # max abs difference allowed by the fixture's README; we land near 3e-5
ORACLE = sorted(glob.glob(os.path.join(DATA, "parity", "oracle", "*.safetensors")))


def _run(models, meta, tensors, poses, schedule="moore"):
    scheduler = dict(meta["scheduler"], sampler="ddim")
    context = dict(length=meta["context_frames"], overlap=meta["context_overlap"], stride=meta["context_stride"],
                   schedule=schedule, fuse="flat", closed_loop=meta["closed_loop"])
    return poseanimate.animate(models, reference_latents=tensors["ref_latents"],
                               image_embeds=tensors["clip_image_embeds"], pose_images=poses, noise=tensors["noise"],
                               steps=meta["steps"], cfg=meta["cfg"], scheduler=scheduler, context=context)


def _expected(tensors):
    return tensors["expected_latents"][0].transpose(0, 1)


def test_shared_fixture(tiny_models):
    meta = json.load(open(os.path.join(MOORE_TINY, "meta.json")))
    tensors = load_file(os.path.join(MOORE_TINY, "tensors.safetensors"))
    poses = np.stack([read_rgb(os.path.join(MOORE_TINY, f"pose_{i:03d}.png")) for i in range(meta["frames"])])
    out = _run(tiny_models, meta, tensors, torch.from_numpy(poses).float() / 255)
    assert out.shape == (12, 4, 32, 16)
    assert (out - _expected(tensors)).abs().max().item() < TOLERANCE


def _musepose_folder(tmp_path):
    """The moore-tiny networks in MusePose's layout: motion modules inside the denoising UNet, no pe."""
    den = torch.load(os.path.join(MOORE_TINY, "denoising_unet.pth"), weights_only=True)
    mm = torch.load(os.path.join(MOORE_TINY, "motion_module.pth"), weights_only=True)
    den.update({k: v for k, v in mm.items() if not k.endswith(".pe")})
    torch.save(den, tmp_path / "denoising_unet.pth")
    for name in ("reference_unet", "pose_guider"):
        (tmp_path / f"{name}.pth").write_bytes(open(os.path.join(MOORE_TINY, f"{name}.pth"), "rb").read())
    return tmp_path


@pytest.mark.parametrize("path", ORACLE, ids=lambda p: os.path.basename(p).split(".")[0])
def test_oracle_cases(path, tiny_models, tmp_path):
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(path)
    models = tiny_models
    if meta["pipeline"] == "muse":
        models = poseanimate.load_models(_musepose_folder(tmp_path), device="cpu", dtype=torch.float32)
        assert models.variant == "musepose" and models.trained_length == 128
    out = _run(models, meta, tensors, tensors["pose_images"].float() / 255)
    assert (out - _expected(tensors)).abs().max().item() < TOLERANCE


def test_moore_sums_windows_without_guidance_like_the_reference(tiny_models):
    """With cfg <= 1 the reference adds overlapping windows' predictions without dividing by their
    count; `moore` reproduces that, `looped` (same windows) averages them."""
    path = os.path.join(DATA, "parity", "oracle", "moore_cfg1_12f.safetensors")
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(path)
    poses = tensors["pose_images"].float() / 255
    moore = _run(tiny_models, meta, tensors, poses, "moore")
    looped = _run(tiny_models, meta, tensors, poses, "looped")
    assert (moore - _expected(tensors)).abs().max().item() < TOLERANCE
    assert (looped - _expected(tensors)).abs().max().item() > 0.1
