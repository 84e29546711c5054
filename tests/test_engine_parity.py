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
from poseanimate.models.loading import read_state_dict
from conftest import DATA, MOORE_TINY, read_rgb

TOLERANCE = 1e-3  # max abs difference allowed by the fixture's README; we land near 3e-5
ORACLE = sorted(glob.glob(os.path.join(DATA, "parity", "oracle", "*.safetensors")))


def _case(path):
    return pytest.param(path, id=os.path.basename(path).split(".")[0])


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


def _derive_folder(networks, files, dst):
    """A Moore-layout network set in another file layout, the way the oracle runs read it:
    ``musepose`` (motion modules inside the denoising UNet, no pe) or ``fp16-safetensors``
    (every tensor, pe included, converted to float16)."""
    src = os.path.join(DATA, "parity", networks)
    roles = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")
    sds = {r: read_state_dict(next(os.path.join(src, f) for f in os.listdir(src) if f.startswith(r + ".")))
           for r in roles}
    if files == "musepose":
        sds["denoising_unet"].update({k: v for k, v in sds.pop("motion_module").items() if not k.endswith(".pe")})
        for role, sd in sds.items():
            torch.save(sd, dst / f"{role}.pth")
    else:
        assert files == "fp16-safetensors", files
        for role, sd in sds.items():
            save_file({k: v.half().contiguous() for k, v in sd.items()}, dst / f"{role}.safetensors")
    return dst


@pytest.fixture(scope="session")
def parity_models(tiny_models, tmp_path_factory):
    """Models per (network folder, file layout), loaded once per session."""
    cache = {("moore-tiny", "pth"): tiny_models}

    def get(networks, files):
        if (networks, files) not in cache:
            folder = os.path.join(DATA, "parity", networks)
            # moore-tiny-b is stored as float16 safetensors: its weights are float16 values, so the
            # .pth and fp16 cases read the same numbers (pe is regenerated, never read)
            stored = "fp16-safetensors" if networks == "moore-tiny-b" else "pth"
            if files not in ("pth", stored):
                folder = _derive_folder(networks, files, tmp_path_factory.mktemp(f"{networks}-{files}"))
            cache[networks, files] = poseanimate.load_models(folder, device="cpu", dtype=torch.float32)
        return cache[networks, files]

    return get


@pytest.mark.parametrize("path", [_case(p) for p in ORACLE])
def test_oracle_cases(path, parity_models):
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(path)
    # the first six cases predate the `networks` / `files` keys: moore-tiny, MusePose layout for MusePose
    files = meta.get("files", "musepose" if meta["pipeline"] == "muse" else "pth")
    models = parity_models(meta.get("networks", "moore-tiny"), files)
    if files == "musepose":
        assert models.variant == "musepose" and models.trained_length == 128
    out = _run(models, meta, tensors, tensors["pose_images"].float() / 255)
    assert out.shape == _expected(tensors).shape
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
