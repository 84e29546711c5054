"""The Python API answers bad input with a ValueError that names the argument (issue 9), and
accepts the names the command line accepts."""

import pytest
import torch

import poseanimate
from conftest import MOORE_TINY
from poseanimate.sampling.context import ContextOptions


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return dict(reference_latents=torch.randn(1, 4, 16, 8, generator=g) * 0.5,
                image_embeds=torch.randn(1, 32, generator=g),
                pose_images=torch.rand(3, 128, 64, 3, generator=g), steps=1, cfg=2.0, seed=1,
                context=dict(length=4, overlap=1))


def _animate(models, inputs, **changes):
    return poseanimate.animate(models, **{**inputs, **changes})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device, expected", [
    ("cuda", "device 'cuda': torch sees no CUDA GPU here"),
    (torch.device("cuda", 1), "device 'cuda:1': torch sees no CUDA GPU here"),
    ("gpu0", "device 'gpu0' is not a device torch knows"),
])
def test_load_models_names_a_device_it_cannot_use(device, expected):
    with pytest.raises(ValueError, match=expected):
        poseanimate.load_models(MOORE_TINY, device=device)


@pytest.mark.parametrize("dtype, expected", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32),
                                             ("auto", torch.float32), (torch.float16, torch.float16)])
def test_load_models_takes_the_command_lines_dtype_names(dtype, expected):
    assert poseanimate.load_models(MOORE_TINY, device="cpu", dtype=dtype).dtype == expected


def test_load_models_names_the_valid_dtypes():
    with pytest.raises(ValueError, match=r"dtype 'half' is not valid; valid choices: 'auto', 'fp16', 'bf16', 'fp32'"):
        poseanimate.load_models(MOORE_TINY, device="cpu", dtype="half")
    with pytest.raises(ValueError, match=r"dtype torch.int8 is not valid"):
        poseanimate.load_models(MOORE_TINY, device="cpu", dtype=torch.int8)


@pytest.mark.parametrize("context, expected", [
    (dict(length="16"), r"context length must be a whole number, got '16' \(str\)"),
    (dict(length=8, overlap=2.0), r"context overlap must be a whole number, got 2.0 \(float\)"),
])
def test_context_options_must_be_whole_numbers(tiny_models, inputs, context, expected):
    with pytest.raises(ValueError, match=expected):
        _animate(tiny_models, inputs, context=context)
    with pytest.raises(ValueError, match=expected):
        ContextOptions.from_dict(context)


@pytest.mark.parametrize("changes, expected", [
    (dict(pose_images=torch.zeros(0, 128, 64, 3)), "pose_images holds no frames"),
    (dict(pose_images=torch.full((2, 128, 64, 3), float("nan"))), "pose_images holds NaN"),
    (dict(pose_images=torch.full((2, 128, 64, 3), float("inf"))), "pose_images holds NaN or infinite"),
    (dict(pose_images=torch.full((2, 128, 64, 3), 255.0)), r"pose_images has values from 255 to 255; float images "
                                                             r"must lie in \[0, 1\]"),
    (dict(pose_images=torch.zeros(2, 128, 64, 3, dtype=torch.int64)), "must be uint8 .* or floating point"),
    (dict(image_embeds=torch.full((1, 32), float("nan"))), "image_embeds holds NaN"),
    (dict(reference_latents=torch.full((1, 4, 16, 8), float("-inf"))), "reference_latents holds NaN or infinite"),
    (dict(noise=torch.full((3, 4, 16, 8), float("nan"))), "noise holds NaN"),
    (dict(cfg=float("nan")), "cfg must be a finite number"),
    (dict(cfg=float("inf")), "cfg must be a finite number"),
    (dict(cfg="3.5"), "cfg must be a finite number .*got '3.5'"),
    (dict(steps="20"), "steps must be a whole number of at least 1, got '20'"),
    (dict(seed=2 ** 64), "seed must be a whole number from 0 to 2\\*\\*64 - 1"),
])
def test_bad_animate_inputs_are_named(tiny_models, inputs, changes, expected):
    with pytest.raises(ValueError, match=expected):
        _animate(tiny_models, inputs, **changes)


def test_uint8_pose_images_mean_0_to_255(tiny_models, inputs):
    images = (torch.rand(3, 128, 64, 3, generator=torch.Generator().manual_seed(5)) * 255).round()
    a = _animate(tiny_models, inputs, pose_images=images.to(torch.uint8))
    b = _animate(tiny_models, inputs, pose_images=images / 255)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
