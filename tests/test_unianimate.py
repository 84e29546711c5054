"""UniAnimate: its UNet and loader, its DDIM schedule, its engine against the reference fixtures.

Parity fixtures (../shared/fixtures/parity/ua-*) come from the reference implementation on tiny random
networks with the released key names (their README); the engine must land within 1e-3 (max abs) of
``expected_latents``; it lands within about 1e-5.
"""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch._subclasses.fake_tensor import FakeTensorMode

import poseanimate
import tiny_models
from conftest import LargestTensor
from poseanimate.models.loading import CheckpointError, read_state_dict
from poseanimate.models.unianimate import UniAnimateConfig, UniAnimateUNet, load_unianimate
from poseanimate.sampling import schedulers as S
from poseanimate.sampling.context import windows
from poseanimate.sampling.families import context_settings, get_family
from poseanimate.sampling.unianimate import noise_prior, starting_latents

FIXTURES = os.path.join(os.environ.get("POSEANIMATE_FIXTURES")
                        or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures"), "parity")
UA_SHARED = os.path.join(FIXTURES, "ua-shared")
UA_SHARED_UNET = os.path.join(UA_SHARED, "unianimate_tiny.pth")
ORACLE = os.path.join(os.path.dirname(__file__), "data", "parity", "ua-oracle")
needs_fixture = pytest.mark.skipif(not os.path.isfile(UA_SHARED_UNET),
                                   reason=f"the ua-shared parity fixture is not at {UA_SHARED}")


@pytest.mark.parametrize("steps, expected", [
    (4, [751, 501, 251, 1]),
    (5, [801, 601, 401, 201, 1]),
    (6, [997, 831, 665, 499, 333, 167, 1]),  # 1000 // 6 = 166: seven timesteps, as the reference runs them
])
def test_stride_spacing_is_the_videocomposer_ddim_schedule(steps, expected):
    cfg = S.SchedulerConfig(beta_schedule="scaled_linear", timestep_spacing="stride", set_alpha_to_one=False)
    assert S.timesteps(cfg, steps).tolist() == expected
    assert len(S.timesteps(cfg, 30)) == 31 and S.timesteps(cfg, 30)[0] == 991
    assert S.timesteps(cfg, 1000)[0] == 999  # clamped to the last train timestep


def test_ddim_without_alpha_one_ends_on_the_first_alpha():
    """UniAnimate's DDIM (float64 tables, its x0/eps formulas) re-derived here: the last step lands on
    alphas_cumprod[0], not on x0; each of the 7 steps of steps=6 calls the model once."""
    cfg = S.SchedulerConfig(beta_schedule="scaled_linear", timestep_spacing="stride", set_alpha_to_one=False)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sqrt_ac = torch.cumprod(1 - betas, 0).sqrt()
    sqrt_ac = (sqrt_ac - sqrt_ac[-1]) * sqrt_ac[0] / (sqrt_ac[0] - sqrt_ac[-1])
    ac = sqrt_ac**2
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 8, 8, generator=g)
    v = torch.randn(2, 4, 8, 8, generator=g)
    seen = []

    def model(x, t):
        seen.append(int(t))
        return v * 0.1 + x * 0.05

    out = S.sample_ddim(model, noise, cfg, 6)
    x = noise.double()
    for t in [997, 831, 665, 499, 333, 167, 1]:
        a, prev = ac[t], ac[max(t - 166, 0)]
        x0 = a.sqrt() * x - (1 - a).sqrt() * (v.double() * 0.1 + x * 0.05)
        eps = ((1 / a).sqrt() * x - x0) / (1 / a - 1).sqrt()
        x = prev.sqrt() * x0 + (1 - prev).sqrt() * eps
    assert seen == [997, 831, 665, 499, 333, 167, 1]
    torch.testing.assert_close(out.double(), x, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ network and loader


def test_released_level_widths_give_the_released_key_set(tmp_path):
    """dim_mult (1, 2, 4, 4) as released: the loader infers it and reads the extra 1x1 skip convolutions
    of input blocks 4 and 7; the key set is the fixture's plus exactly those (the fixture README's
    description of the released file)."""
    path = tiny_models.write_unianimate(tmp_path / "unianimate.pth", dim=32, dim_mult=(1, 2, 4, 4))
    models = load_unianimate(path, device="cpu", dtype=torch.float32)
    cfg = models.unet.config
    assert (cfg.dim, cfg.dim_mult, cfg.num_res_blocks) == (32, (1, 2, 4, 4), 2)
    assert cfg.attention_levels == (False, True, True, True)
    assert (cfg.context_dim, cfg.head_dim, cfg.concat_dim, cfg.num_tokens) == (64, 8, 8, 4)
    sd = models.unet.state_dict()
    assert sd["input_blocks.4.0.skip_connection.weight"].shape == (64, 32, 1, 1)
    assert sd["input_blocks.7.0.skip_connection.weight"].shape == (128, 64, 1, 1)
    skips = {f"input_blocks.{i}.0.skip_connection.{p}" for i in (4, 7) for p in ("weight", "bias")}
    if os.path.isfile(UA_SHARED_UNET):
        assert set(sd) == set(read_state_dict(UA_SHARED_UNET)) | skips
    out = models.unet(torch.randn(2, 3, 4, 16, 8), torch.tensor(500), torch.randn(2, 81, 64),
                      torch.randn(2, 3, 8, 16, 8), torch.randn(2, 12, 16, 8))
    assert out.shape == (2, 3, 4, 16, 8) and torch.isfinite(out).all()


@needs_fixture
def test_load_models_recognises_the_family_from_the_keys():
    models = poseanimate.load_models(UA_SHARED, device="cpu", dtype=torch.float32)
    assert models.family == "unianimate"
    assert models.unet.config.dim_mult == (1, 1, 1, 1) and models.unet.config.context_dim == 64
    assert models.device == torch.device("cpu") and models.dtype == torch.float32


def test_damaged_files_are_named_with_what_is_wrong(tmp_path):
    path = tiny_models.write_unianimate(tmp_path / "unet.pth")
    sd = torch.load(path, weights_only=True)
    del sd["input_blocks.1.0.temopral_conv.conv2.3.weight"]
    torch.save(sd, tmp_path / "unet.pth")
    with pytest.raises(CheckpointError, match=r"unet.pth is not a usable UniAnimate UNet file: missing 1 keys "
                                              r"\(input_blocks.1.0.temopral_conv.conv2.3.weight\)"):
        load_unianimate(tmp_path / "unet.pth", device="cpu")
    sd = {k: v for k, v in sd.items() if not k.startswith("dwpose_embedding.")}
    torch.save(sd, tmp_path / "unet.pth")
    with pytest.raises(CheckpointError, match="is not a UniAnimate UNet: no dwpose_embedding weights"):
        load_unianimate(tmp_path / "unet.pth", device="cpu")
    with open(tmp_path / "unet.pth", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="damaged or incomplete.*interrupted download"):
        load_unianimate(tmp_path / "unet.pth", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    torch.save({"conv_in.weight": torch.zeros(1)}, empty / "other.pth")
    with pytest.raises(CheckpointError, match="holds no UniAnimate UNet file; download unianimate_16f_32f"):
        load_unianimate(empty, device="cpu")


def test_full_size_32_frames_never_build_an_attention_matrix():
    """The released widths, 32 frames at 512x768 with guidance (2 samples of 1 + 32 frames), traced with
    fake tensors: every attention is a fused kernel and no tensor reaches half the attention matrix of
    the first spatial attention level (2 x 33 frames x 10 heads x (48 x 32 tokens)^2, 1.6e9 elements; the
    largest tensors are that level's feed-forward activations, 5.2e8)."""
    with FakeTensorMode():
        unet = UniAnimateUNet(UniAnimateConfig())
        x = torch.randn(2, 32, 4, 96, 64)
        with LargestTensor() as spy:
            pose = unet.embed_pose(torch.rand(32, 3, 768, 512))
            reference = unet.embed_reference(torch.randn(1, 4, 96, 64), torch.rand(1, 3, 768, 512))
            tokens = unet.image_tokens(torch.randn(1, 1024))
            out = unet(x, torch.tensor(999), torch.randn(2, 77 + tokens.shape[1], 1024),
                       torch.cat([pose[None], torch.zeros_like(pose[None])]), torch.cat([reference, reference * 0]))
    assert out.shape == (2, 32, 4, 96, 64)
    tokens = 48 * 32
    attention_matrix = 2 * 33 * 10 * tokens * tokens
    assert spy.largest < attention_matrix / 2, spy.largest
    fused = spy.ops.get("aten._scaled_dot_product_flash_attention_for_cpu", 0)
    # 32 transformers, the first temporal one, 3 frame transformers (more calls: pixel chunks)
    assert fused >= 16 * 2 * 2 + 2 + 3, fused
    assert "aten._softmax" not in spy.ops and "aten.bmm" not in spy.ops and "aten.baddbmm" not in spy.ops


# ------------------------------------------------------------------------------------------ engine parity


def _png(name):
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(os.path.join(UA_SHARED, name)).convert("RGB")))


@pytest.fixture(scope="module")
def shared():
    if not os.path.isfile(UA_SHARED_UNET):
        pytest.skip(f"the ua-shared parity fixture is not at {UA_SHARED}")
    meta = json.load(open(os.path.join(UA_SHARED, "meta.json")))
    tensors = load_file(os.path.join(UA_SHARED, "tensors.safetensors"))
    models = poseanimate.load_models(UA_SHARED, device="cpu", dtype=torch.float32)
    inputs = dict(reference_latents=tensors["ref_latent"], image_embeds=tensors["clip_image_embed"],
                  text_embeds=tensors["zero_y"], reference_image=_png("ref_image.png"),
                  reference_pose=_png("ref_pose.png"),
                  pose_images=torch.stack([_png(f"pose_{i:03d}.png") for i in range(meta["frames"])]))
    return models, meta, tensors, inputs


def _frames_first(x):
    return x[0].transpose(0, 1)


def test_ua_shared_parity(shared):
    """The reference's short entrance: 8 frames (one window), ddim_timesteps 4, guide scale 2.5."""
    models, meta, tensors, inputs = shared
    steps = []
    out = poseanimate.animate(models, **inputs, noise=tensors["x_T"], steps=meta["ddim_timesteps_cfg"],
                              cfg=meta["guide_scale"],
                              callback=lambda e: steps.append(e) if e["event"] == "step" else None)
    expected = _frames_first(tensors["expected_latents"])
    assert (out - expected).abs().max() < 1e-3
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)
    assert [int(e["t"]) for e in steps] == meta["timesteps_run"]
    for i, e in enumerate(steps):
        torch.testing.assert_close(e["x"].cpu(), _frames_first(tensors["trajectory"][i]), atol=2e-5, rtol=0)


def test_noise_prior_of_the_short_entrance(shared):
    models, meta, tensors, inputs = shared
    sched = S.SchedulerConfig(**{k: v for k, v in get_family("unianimate").scheduler.items() if k != "sampler"})
    x_T = noise_prior(_frames_first(tensors["noise_base"]), _frames_first(tensors["offset_noise"]),
                      tensors["ref_latent"], S.alphas_cumprod(sched), long=False)
    torch.testing.assert_close(x_T, _frames_first(tensors["x_T"]), atol=1e-6, rtol=0)


def test_long_mode_parity(shared):
    """The long entrance on 16 frames, 8-frame windows overlapping by 2 (3 windows, the last pinned to the
    end), 2 steps; starting latents from the long entrance's noise prior (939, offset noise after)."""
    models, meta, tensors, inputs = shared
    oracle = load_file(os.path.join(ORACLE, "long_16f.safetensors"))
    frames = torch.stack([_png(f"pose_{i % 8:03d}.png") for i in range(16)])
    frames[8:] = frames[8:].flip(2)
    sched = S.SchedulerConfig(**{k: v for k, v in get_family("unianimate").scheduler.items() if k != "sampler"})
    x_T = noise_prior(_frames_first(oracle["noise_base"]), _frames_first(oracle["offset_noise"]),
                      tensors["ref_latent"], S.alphas_cumprod(sched), long=True)
    torch.testing.assert_close(x_T, _frames_first(oracle["x_T"]), atol=1e-6, rtol=0)
    context = dict(length=8, overlap=2)
    assert windows(16, context_settings("unianimate", context)) == [list(range(0, 8)), list(range(6, 14)),
                                                                   list(range(8, 16))]
    out = poseanimate.animate(models, **dict(inputs, pose_images=frames), noise=x_T, steps=2, cfg=2.5,
                              context=context)
    torch.testing.assert_close(out, _frames_first(oracle["expected_latents"]), atol=2e-5, rtol=0)


def test_first_frame_parity(shared):
    """The short entrance's other partial_keys set: image, local_image, dwpose (no reference frame)."""
    models, meta, tensors, inputs = shared
    oracle = load_file(os.path.join(ORACLE, "first_frame_8f.safetensors"))
    out = poseanimate.animate(models, **inputs, first_frame=True, noise=tensors["x_T"], steps=4, cfg=2.5)
    torch.testing.assert_close(out, _frames_first(oracle["expected_latents"]), atol=2e-5, rtol=0)


def test_seeded_noise_and_window_batch(shared):
    models, meta, tensors, inputs = shared
    short = {k: v[:4] if k == "pose_images" else v for k, v in inputs.items()}
    a = poseanimate.animate(models, **short, seed=3, steps=1, cfg=2.5, context=dict(length=2, overlap=1))
    b = poseanimate.animate(models, **short, seed=3, steps=1, cfg=2.5, context=dict(length=2, overlap=1,
                                                                                    window_batch=3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    start = starting_latents((4, 4, 32, 16), 3, tensors["ref_latent"], context=dict(length=2, overlap=1))
    again = starting_latents((4, 4, 32, 16), 3, tensors["ref_latent"], context=dict(length=2, overlap=1))
    assert torch.equal(start, again)
    single = starting_latents((4, 4, 32, 16), 3, tensors["ref_latent"])  # one window: the short entrance's prior
    assert not torch.allclose(start, single)


def test_bad_inputs_say_what_is_expected(shared):
    models, meta, tensors, inputs = shared
    with pytest.raises(ValueError, match=r"text_embeds must be \[1, 77, 64\]"):
        poseanimate.animate(models, **dict(inputs, text_embeds=torch.zeros(1, 77, 32)), steps=1, cfg=2.5, seed=0)
    with pytest.raises(ValueError, match=r"image_embeds must be \[1, 64\] or \[1, 1, 64\]"):
        poseanimate.animate(models, **dict(inputs, image_embeds=torch.zeros(1, 2, 64)), steps=1, cfg=2.5, seed=0)
    with pytest.raises(ValueError, match=r"reference_pose must be \[256, 128, 3\]"):
        poseanimate.animate(models, **dict(inputs, reference_pose=torch.zeros(64, 64, 3)), steps=1, cfg=2.5, seed=0)
