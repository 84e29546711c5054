"""OpenCLIP's towers (models/open_clip.py) against open_clip itself: tests/data/open_clip/expected.safetensors
was made by open_clip on a tiny model with the released key names (tools/make_open_clip_fixture.py)."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from open_clip_weights import TINY, pixels, state_dict
from poseanimate.models.loading import CheckpointError
from poseanimate.models.open_clip import SOT, EOT, VISION_HEADS, build_open_clip, empty_prompt_tokens, load_open_clip

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "open_clip", "expected.safetensors")


@pytest.fixture(scope="module")
def fixture():
    with safe_open(FIXTURE, "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        expected = {k: f.get_tensor(k) for k in f.keys()}
    return meta, expected, state_dict(meta["shapes"])


def test_towers_match_open_clip(fixture):
    meta, expected, sd = fixture
    clip = build_open_clip(sd, "tiny.bin", device="cpu", dtype=torch.float32)
    assert clip.visual.image_size == TINY["image_size"]
    torch.testing.assert_close(clip.encode_image(pixels()), expected["image_embeds"], rtol=0, atol=2e-5)
    torch.testing.assert_close(clip.empty_prompt(), expected["zero_y"], rtol=0, atol=2e-5)


def test_empty_prompt_tokens_are_open_clips(fixture):
    meta, _, _ = fixture
    tokens = empty_prompt_tokens()
    assert tokens.shape == (1, 77)
    assert tokens[0, :4].tolist() == meta["tokens"] == [SOT, EOT, 0, 0]


def test_vit_h_heads_follow_open_clips_config(fixture):
    vit_h = fixture[0]["vit_h_14"]
    assert VISION_HEADS[vit_h["vision_width"]] == vit_h["vision_heads"]
    assert vit_h["text_width"] // 64 == vit_h["text_heads"]


def test_the_text_tower_skips_only_the_last_layer(fixture):
    _, expected, sd = fixture
    clip = build_open_clip(sd, "tiny.bin", parts=("text",), device="cpu", dtype=torch.float32)
    assert clip.visual is None
    last = clip.text(empty_prompt_tokens(), skip_last=0)
    assert (last - expected["zero_y"]).abs().max() > 1e-2


def test_load_from_a_file_and_half_precision(tmp_path, fixture):
    _, expected, sd = fixture
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(sd, path)
    clip = load_open_clip(path, parts=("visual",), device="cpu", dtype=torch.bfloat16)
    assert clip.text is None and clip.visual.proj.dtype == torch.bfloat16
    got = clip.encode_image(pixels())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected["image_embeds"], rtol=0.05, atol=0.1)


def test_wrong_files_are_named(tmp_path, fixture):
    _, _, sd = fixture
    with pytest.raises(CheckpointError, match="no OpenCLIP image tower.*open_clip_pytorch_model.bin"):
        build_open_clip({k: v for k, v in sd.items() if not k.startswith("visual.")}, "text_only.bin",
                        parts=("visual",), device="cpu")
    broken = dict(sd)
    del broken["transformer.resblocks.1.mlp.c_fc.weight"]
    with pytest.raises(CheckpointError, match=r"missing transformer\.resblocks\.1\.mlp\.c_fc\.weight"):
        build_open_clip(broken, "broken.bin", parts=("text",), device="cpu")
    with pytest.raises(ValueError, match="visual and/or text"):
        load_open_clip(tmp_path / "x.bin", parts=("image",))
