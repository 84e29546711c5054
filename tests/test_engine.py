"""The engine on the tiny networks: loading (and its errors), determinism, batching, memory."""

import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch._subclasses.fake_tensor import FakeTensorMode

import poseanimate
from conftest import MOORE_TINY, LargestTensor
from poseanimate.models.loading import CheckpointError, read_state_dict
from poseanimate.models.unet import AttentionState, UNet, UNetConfig
from poseanimate.sampling.animate_anyone import encode_reference

FILES = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return dict(reference_latents=torch.randn(1, 4, 16, 8, generator=g) * 0.5,
                image_embeds=torch.randn(1, 32, generator=g),
                pose_images=torch.rand(6, 128, 64, 3, generator=g))


def _run(models, inputs, **kw):
    args = dict(steps=2, cfg=3.5, context=dict(length=4, overlap=2, schedule="static"), **inputs)
    args.update(kw)
    return poseanimate.animate(models, **args)


def _folder(tmp_path, names=FILES):
    for name in names:
        shutil.copy(os.path.join(MOORE_TINY, f"{name}.pth"), tmp_path / f"{name}.pth")
    return tmp_path


def test_the_same_seed_gives_the_same_video(tiny_models, inputs):
    a = _run(tiny_models, inputs, seed=123)
    b = _run(tiny_models, inputs, seed=123)
    c = _run(tiny_models, inputs, seed=124)
    assert a.shape == (6, 4, 16, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.01


def test_seeded_noise_is_drawn_on_the_cpu(tiny_models, inputs):
    """A seed means torch.randn with a CPU generator, so every device starts from the same noise."""
    noise = torch.randn(6, 4, 16, 8, generator=torch.Generator("cpu").manual_seed(77))
    torch.testing.assert_close(_run(tiny_models, inputs, seed=77), _run(tiny_models, inputs, noise=noise),
                               atol=0, rtol=0)


@pytest.mark.parametrize("schedule", ["static", "looped"])
def test_window_batch_does_not_change_the_result(tiny_models, schedule):
    # 32x16 latents: at 16x8 the tiny UNet's deepest level is 2x1 pixels, where a GroupNorm over two values
    # turns the 1e-6 rounding difference of a batched matrix product (one thread) into 0.3 after two steps.
    g = torch.Generator().manual_seed(0)
    inputs = dict(reference_latents=torch.randn(1, 4, 32, 16, generator=g) * 0.5,
                  image_embeds=torch.randn(1, 32, generator=g), pose_images=torch.rand(6, 256, 128, 3, generator=g))
    ctx = dict(length=4, overlap=2, schedule=schedule)
    one = _run(tiny_models, inputs, seed=5, context=ctx)
    three = _run(tiny_models, inputs, seed=5, context=dict(ctx, window_batch=3))
    torch.testing.assert_close(three, one, atol=1e-4, rtol=0)


def test_callback_sees_every_window_and_step_and_can_cancel(tiny_models, inputs):
    events = []
    _run(tiny_models, inputs, seed=1, callback=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("step") == 2 and kinds.count("window") == 2 * 2  # 6 frames, windows [0-3], [2-5]

    class Cancelled(Exception):
        pass

    def cancel(event):
        if event["event"] == "window":
            raise Cancelled

    with pytest.raises(Cancelled):
        _run(tiny_models, inputs, seed=1, callback=cancel)


def test_long_windows_warn_about_the_trained_length(tiny_models, inputs, caplog):
    with caplog.at_level(logging.WARNING):
        _run(tiny_models, inputs, seed=1, steps=1, context=dict(length=4, overlap=1))
    assert not caplog.records
    trained = tiny_models.trained_length
    frames = trained + 2
    big = dict(inputs, pose_images=torch.rand(frames, 128, 64, 3))
    with caplog.at_level(logging.WARNING):
        _run(tiny_models, big, seed=1, steps=1, cfg=1.0, context=dict(length=frames, overlap=1))
    assert f"trained on" in caplog.text and str(trained) in caplog.text


def test_bad_inputs_say_what_shape_is_expected(tiny_models, inputs):
    with pytest.raises(ValueError, match=r"pose_images must be \[frames, 128, 64, 3\]"):
        _run(tiny_models, dict(inputs, pose_images=torch.rand(6, 128, 72, 3)))
    with pytest.raises(ValueError, match=r"image_embeds must be \[1, 32\]"):
        _run(tiny_models, dict(inputs, image_embeds=torch.rand(1, 768)))
    with pytest.raises(ValueError, match=r"noise must be \[6, 4, 16, 8\]"):
        _run(tiny_models, inputs, noise=torch.rand(5, 4, 16, 8))
    with pytest.raises(ValueError, match="valid values: linear, scaled_linear"):
        _run(tiny_models, inputs, scheduler=dict(beta_schedule="cosine"))
    with pytest.raises(ValueError, match="ddim"):
        _run(tiny_models, inputs, scheduler=dict(sampler="heun"))


# ------------------------------------------------------------------------------------------ loading


def test_fp16_safetensors_load_like_the_pickles(tmp_path, tiny_models):
    for name in FILES:
        sd = read_state_dict(os.path.join(MOORE_TINY, f"{name}.pth"))
        save_file({k: v.half().contiguous() for k, v in sd.items()}, tmp_path / f"{name}.safetensors")
    models = poseanimate.load_models(tmp_path, device="cpu", dtype=torch.float32)
    assert models.variant == "moore"
    ours = models.denoising_unet.state_dict()
    for k, v in tiny_models.denoising_unet.state_dict().items():
        assert torch.equal(ours[k], v.half().float()), k


def test_dict_of_files(tmp_path):
    paths = {name: os.path.join(MOORE_TINY, f"{name}.pth") for name in FILES}
    models = poseanimate.load_models(paths, device="cpu", dtype=torch.float32)
    assert models.files == paths and models.trained_length == 32


def test_missing_role_names_the_folder_the_file_and_where_to_download(tmp_path):
    _folder(tmp_path, ("reference_unet", "denoising_unet", "motion_module"))
    with pytest.raises(CheckpointError) as e:
        poseanimate.load_models(tmp_path, device="cpu")
    msg = str(e.value)
    assert str(tmp_path) in msg and "pose_guider" in msg and "huggingface.co" in msg


def test_missing_motion_modules(tmp_path):
    _folder(tmp_path, ("reference_unet", "denoising_unet", "pose_guider"))
    with pytest.raises(CheckpointError, match="no motion modules.*motion_module.pth"):
        poseanimate.load_models(tmp_path, device="cpu")


def test_truncated_file_is_called_a_broken_download(tmp_path):
    _folder(tmp_path)
    path = tmp_path / "denoising_unet.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="denoising_unet.pth.*download it again"):
        poseanimate.load_models(tmp_path, device="cpu")


def test_a_file_for_another_model_is_named_with_what_it_is(tmp_path):
    _folder(tmp_path, ("denoising_unet", "motion_module", "pose_guider"))
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3), "decoder.conv_out.weight": torch.zeros(3, 4, 3, 3)},
              tmp_path / "reference_unet.safetensors")
    with pytest.raises(CheckpointError) as e:
        poseanimate.load_models(tmp_path, device="cpu")
    assert "reference_unet.safetensors: a VAE" in str(e.value) and "reference_unet" in str(e.value)


def test_wrong_role_in_a_dict_says_what_the_file_is():
    paths = {name: os.path.join(MOORE_TINY, f"{name}.pth") for name in FILES}
    paths["reference_unet"] = paths["pose_guider"]
    with pytest.raises(CheckpointError, match="given as the reference_unet file, but it looks like pose_guider"):
        poseanimate.load_models(paths, device="cpu")


def test_damaged_state_dict_summarises_the_keys(tmp_path):
    _folder(tmp_path, ("reference_unet", "motion_module", "pose_guider"))
    sd = read_state_dict(os.path.join(MOORE_TINY, "denoising_unet.pth"))
    sd = {k: v for k, v in sd.items() if not k.startswith("up_blocks.1.")}
    sd.update({f"extra.layer{i}.weight": torch.zeros(1) for i in range(300)})
    torch.save(sd, tmp_path / "denoising_unet.pth")
    with pytest.raises(CheckpointError) as e:
        poseanimate.load_models(tmp_path, device="cpu")
    msg = str(e.value)
    assert "denoising_unet.pth" in msg and "Missing" in msg and "up_blocks.1" in msg and "Unexpected 300 keys" in msg
    assert len(msg) < 1200


def test_unsafe_pickles_are_refused(tmp_path):
    _folder(tmp_path, ("reference_unet", "motion_module", "pose_guider"))
    torch.save({"conv_in.weight": torch.zeros(1), "payload": print}, tmp_path / "denoising_unet.pth")
    with pytest.raises(CheckpointError, match="could not be read"):
        poseanimate.load_models(tmp_path, device="cpu")


# ------------------------------------------------------------------------------------------ memory


def test_full_size_window_never_builds_an_attention_matrix():
    """SD1.5 widths, a 24-frame window at 512x768 with guidance (48 rows), traced with fake tensors:
    every attention is a fused kernel and no tensor reaches the size of one attention matrix."""
    with FakeTensorMode():
        cfg = UNetConfig()
        reference = UNet(UNetConfig(has_output=False))
        unet = UNet(UNetConfig(motion_modules=True))
        latents = torch.randn(48, 4, 96, 64)
        context = torch.randn(48, 1, cfg.cross_attention_dim)
        features = encode_reference(reference, torch.randn(1, 4, 96, 64), torch.randn(1, 768))
        kv = unet.reference_keys_values(features.tokens)
        with LargestTensor() as spy:
            out = unet(latents, torch.tensor(999), context, AttentionState(frames=24, reference=kv, plain_rows=1),
                       pose=torch.randn(48, 320, 96, 64))
    assert out.shape == (48, 4, 96, 64)
    tokens = 96 * 64
    attention_matrix = 24 * 8 * tokens * 2 * tokens
    assert spy.largest < attention_matrix / 10, spy.largest
    fused = spy.ops.get("aten._scaled_dot_product_flash_attention_for_cpu", 0)
    assert fused == 16 * 2 + 21 * 2  # spatial: plain + reference rows per block; temporal: 2 per motion module
    assert "aten._softmax" not in spy.ops and "aten.bmm" not in spy.ops and "aten.baddbmm" not in spy.ops
