"""TCAN's pose temperature map through the whole engine against ../shared/fixtures/parity/ptm-shared
(the reference Moore pipeline with TCAN's map patched into the down/up motion modules)."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import poseanimate
from poseanimate.sampling.temperature import temperature_map
from conftest import read_rgb, shared_fixture

TOLERANCE = 1e-3  # the fixture README's pass line; we land near 3e-5


@pytest.fixture(scope="module")
def ptm():
    folder = shared_fixture("ptm-shared")
    meta = json.load(open(os.path.join(folder, "meta.json")))
    poses = np.stack([read_rgb(os.path.join(folder, f"pose_{i:03d}.png")) for i in range(meta["frames"])])
    models = poseanimate.load_models(folder, device="cpu", dtype=torch.float32)
    return meta, load_file(os.path.join(folder, "tensors.safetensors")), torch.from_numpy(poses), models


def _run(ptm, strength):
    meta, tensors, poses, models = ptm
    context = dict(length=meta["context_frames"], overlap=meta["context_overlap"], stride=meta["context_stride"],
                   schedule="moore", fuse="flat", closed_loop=meta["closed_loop"])
    return poseanimate.animate(models, reference_latents=tensors["ref_latents"],
                               image_embeds=tensors["clip_image_embeds"], pose_images=poses, noise=tensors["noise"],
                               steps=meta["steps"], cfg=meta["cfg"], scheduler=dict(meta["scheduler"], sampler="ddim"),
                               context=context, pose_temperature=strength)


def test_window_maps_equal_the_fixtures(ptm):
    meta, tensors, poses, _ = ptm
    for i, window in enumerate(meta["ptm"]["windows"]):
        tau = temperature_map(poses[window["frames"]], meta["pose_temperature"])
        torch.testing.assert_close(tau, tensors["tau_maps"][i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("strength, key", [(3.0, "expected_latents"), (0.0, "expected_latents_no_ptm")])
def test_engine_lands_on_the_reference(ptm, strength, key):
    out = _run(ptm, strength)
    expected = ptm[1][key][0].transpose(0, 1)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "hot"])
def test_bad_strength_is_refused_before_any_work(ptm, bad):
    with pytest.raises(ValueError, match="pose_temperature must be a number >= 0"):
        _run(ptm, bad)
