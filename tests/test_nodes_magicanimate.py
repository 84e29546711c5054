"""The MagicAnimate family through the pack's nodes (COMFYUI_PATH; skipped without it): loading, the
reference input, the DensePose/skeleton check, the Sampler against poseanimate.animate."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import poseanimate
from conftest import animate_anyone_folder
from test_nodes import N, inputs, loaded, model_root, run  # noqa: F401  (fixtures)
from tiny_models import write_magicanimate_folder

CHAIN_TOLERANCE = 1e-4  # ComfyUI's attention kernel against SDPA, float32
BACKGROUND = torch.tensor([68, 1, 84]) / 255  # viridis(0): the DensePose renders' background


@pytest.fixture(scope="module")
def ma_root(N, tmp_path_factory):
    root = tmp_path_factory.mktemp("animate_anyone")
    write_magicanimate_folder(str(root / "magicanimate"), cross_attention_dim=32, seed=1)
    with animate_anyone_folder(root):
        yield root


@pytest.fixture(scope="module")
def ma(N, ma_root):
    return run(N.models.LoadModels, folder="magicanimate", dtype="fp32")


def densepose_images(frames=5, height=64, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = BACKGROUND.expand(frames, height, width, 3).clone()
    for f in range(frames):
        top = 8 + f
        images[f, top:top + 40, 8:24] = torch.rand(3, generator=g)
    return images


def skeleton_images(frames=3, height=128, width=64):
    """Lines on black, like Pose Render's output."""
    import cv2

    images = np.zeros((frames, height, width, 3), np.uint8)
    for f, image in enumerate(images):
        for (x0, y0, x1, y1), colour in (((32, 20, 32, 70), (255, 0, 0)), ((32, 30, 12 + f, 60), (0, 255, 0)),
                                         ((32, 70, 20, 120), (0, 0, 255)), ((32, 70, 44, 120), (255, 255, 0))):
            cv2.line(image, (x0, y0), (x1, y1), colour, 4)
    return torch.from_numpy(images).float() / 255


def conditioning(dim=32):
    return [[torch.randn(1, 77, dim, generator=torch.Generator().manual_seed(2)), {}]]


def test_load_models_recognises_the_family(ma):
    assert ma.family == ma.variant == "magicanimate"
    assert ma.embed_dim == 32 and ma.trained_length == 24


def test_sampler_matches_the_library(N, ma):
    latent = torch.randn(1, 4, 8, 4, generator=torch.Generator().manual_seed(3))
    cond = conditioning()
    images = densepose_images()
    ref = run(N.models.ReferenceEncode, models=ma, latent={"samples": latent}, conditioning=cond)
    pose = run(N.models.PoseGuiderEncode, models=ma, pose_images=images)
    ctx = run(N.sampling.ContextWindows, length=4, overlap=2, stride=1, schedule="looped", fuse="flat",
              closed_loop="on", window_batch=1, freenoise=False)
    out = run(N.sampling.Sampler, models=ma, reference=ref, pose=pose, context=ctx, seed=9, steps=2, cfg=2.5,
              sampler="ddim", beta_schedule="auto", frames=0)["samples"]
    models = poseanimate.load_models(ma.folder, device="cpu", dtype=torch.float32)
    expected = poseanimate.animate(models, reference_latents=latent * 0.18215, text_embeds=cond[0][0],
                                   pose_images=images, seed=9, steps=2, cfg=2.5,
                                   context={"length": 4, "overlap": 2, "schedule": "looped", "fuse": "flat",
                                            "closed_loop": True})
    assert out.shape == (5, 4, 8, 4)
    assert (out * 0.18215 - expected).abs().max() < CHAIN_TOLERANCE


def test_reference_encode_needs_the_text_conditioning(N, ma):
    latent = {"samples": torch.zeros(1, 4, 8, 4)}
    with pytest.raises(ValueError, match=r"ReferenceNet Encode: input 'conditioning': .* need the text .*CLIPTextEncode"):
        run(N.models.ReferenceEncode, models=ma, latent=latent)
    with pytest.raises(ValueError, match=r"input 'conditioning': .*\[1, 77, 768\].*expect \[1, 77, 32\]"):
        run(N.models.ReferenceEncode, models=ma, latent=latent, conditioning=conditioning(768))


def test_skeleton_renders_into_magicanimate_are_an_error(N, ma):
    with pytest.raises(ValueError, match=r"PoseGuider Encode: input 'pose_images': .*skeleton renders.*DensePose "
                                         r"Extract"):
        run(N.models.PoseGuiderEncode, models=ma, pose_images=skeleton_images())


def test_densepose_into_animate_anyone_is_an_error(N, loaded):
    with pytest.raises(ValueError, match=r"PoseGuider Encode: input 'pose_images': .*DensePose render.*Pose "
                                         r"Render"):
        run(N.models.PoseGuiderEncode, models=loaded, pose_images=densepose_images(height=128, width=64))


def test_reference_of_one_family_into_the_other(N, ma, loaded, inputs):
    ma_ref = run(N.models.ReferenceEncode, models=ma, latent={"samples": torch.zeros(1, 4, 16, 8)},
                 conditioning=conditioning())
    pose = run(N.models.PoseGuiderEncode, models=loaded, pose_images=skeleton_images(6))
    with pytest.raises(ValueError, match=r"Sampler: input 'reference': .*MagicAnimate"):
        run(N.sampling.Sampler, models=loaded, reference=ma_ref, pose=pose, seed=0, steps=1, cfg=2.0,
            sampler="ddim", beta_schedule="auto", frames=0)
    moore_ref = run(N.models.ReferenceEncode, models=loaded, latent={"samples": torch.zeros(1, 4, 16, 8)},
                    clip_vision_output=SimpleNamespace(image_embeds=inputs.embeds))
    ma_pose = run(N.models.PoseGuiderEncode, models=ma, pose_images=densepose_images(height=128, width=64))
    with pytest.raises(ValueError, match=r"Sampler: input 'reference': .*Animate Anyone"):
        run(N.sampling.Sampler, models=ma, reference=moore_ref, pose=ma_pose, seed=0, steps=1, cfg=2.0,
            sampler="ddim", beta_schedule="auto", frames=0)
