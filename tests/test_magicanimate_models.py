"""MagicAnimate's networks and files: the LDM key conversion, the ControlNet, the loader's formats and errors."""

import os
import shutil

import pytest
import torch

import poseanimate
from poseanimate.models import magicanimate, sd_checkpoint
from poseanimate.models.controlnet import ControlNet
from poseanimate.models.loading import CheckpointError
from poseanimate.models.unet import AttentionState, UNet, UNetConfig
from conftest import shared_fixture
from tiny_models import diffusers_to_ldm, write_magicanimate_folder

CFG = UNetConfig(block_out_channels=(32, 32, 32, 64), cross_attention_dim=32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("magicanimate")
    return {name: write_magicanimate_folder(str(root / name), cross_attention_dim=32, **kw) for name, kw in {
        "diffusers": {}, "ldm": {"unet": "ldm"}, "fp16": {"dtype": torch.float16},
        "spatial": {"unet": None, "spatial_in_motion": True}}.items()}


def test_ldm_conversion_is_exact():
    torch.manual_seed(0)
    sd = UNet(CFG).state_dict()
    ldm = diffusers_to_ldm(sd)
    ldm["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)
    assert sd_checkpoint.is_ldm_unet(ldm) and not sd_checkpoint.is_ldm_unet(sd)
    back = sd_checkpoint.unet_to_diffusers(ldm)
    assert back.keys() == sd.keys()
    assert all(back[k] is ldm[old] for old, k in sd_checkpoint.key_map(ldm.keys()).items())
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_ldm_conversion_rejects_unknown_unet_keys():
    ldm = diffusers_to_ldm(UNet(CFG).state_dict())
    ldm["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="label_emb"):
        sd_checkpoint.unet_to_diffusers(ldm)


def test_controlnet_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ours = ControlNet(CFG, (16, 32, 96, 256)).eval()
    for p in ours.parameters():
        p.data.normal_(0, 0.05)
    theirs = diffusers.ControlNetModel(block_out_channels=(32, 32, 32, 64), cross_attention_dim=32,
                                       attention_head_dim=8, conditioning_embedding_out_channels=(16, 32, 96, 256))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval()
    x, cond, context = torch.randn(3, 4, 16, 8), torch.rand(3, 3, 128, 64), torch.randn(3, 7, 32)
    t = torch.tensor(501)
    with torch.no_grad():
        skips, mid = ours(x, t, context, cond, scale=0.7)
        ref = theirs(x, t, context, cond, conditioning_scale=0.7, return_dict=False)
    assert len(skips) == len(ref[0]) == 12
    for a, b in zip(skips, ref[0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mid, ref[1], atol=1e-5, rtol=1e-4)


def test_video_norm_pools_group_norm_over_a_windows_frames():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(**{**CFG.__dict__, "motion_modules": True, "video_norm": True})).eval()
    x, context = torch.randn(2 * 3, 4, 16, 8), torch.randn(6, 7, 32)
    with torch.no_grad():
        both = unet(x, 10, context, AttentionState(frames=3))
        first = unet(x[:3], 10, context[:3], AttentionState(frames=3))
        x2 = x.clone()
        x2[1] += 1  # another frame of the same window changes frame 0; the other window is untouched
        moved = unet(x2, 10, context, AttentionState(frames=3))
    torch.testing.assert_close(both[:3], first, atol=1e-5, rtol=1e-4)
    assert (moved[0] - both[0]).abs().max() > 1e-3
    torch.testing.assert_close(moved[3:], both[3:], atol=1e-6, rtol=0)


def test_no_mid_block_motion_module():
    unet = UNet(UNetConfig(**{**CFG.__dict__, "motion_modules": True, "motion_mid": False}), device="meta")
    keys = unet.state_dict().keys()
    assert not any(k.startswith("mid_block.motion_modules.") for k in keys)
    assert any(k.startswith("up_blocks.0.motion_modules.2.") for k in keys)


@pytest.mark.parametrize("name", ["ldm", "fp16", "spatial"])
def test_formats_load_the_same_networks(folders, name):
    base = poseanimate.load_models(folders["diffusers"], device="cpu", dtype=torch.float32)
    other = poseanimate.load_models(folders[name], device="cpu", dtype=torch.float32)
    assert base.family == other.family == "magicanimate"
    assert other.trained_length == 24
    for attr in ("appearance_encoder", "denoising_unet", "controlnet"):
        a, b = getattr(base, attr).state_dict(), getattr(other, attr).state_dict()
        assert a.keys() == b.keys()
        cast = (lambda v: v.half().float()) if name == "fp16" else (lambda v: v)
        assert all(torch.equal(cast(a[k]), b[k]) for k in a), attr


def test_loaded_networks(folders):
    models = poseanimate.load_models(folders["diffusers"], device="cpu", dtype=torch.float32)
    assert models.denoising_unet.config.video_norm and not models.denoising_unet.config.motion_mid
    assert not hasattr(models.denoising_unet.mid_block, "motion_modules")
    assert models.embed_dim == 32
    assert models.files["unet"].endswith(os.path.join("unet", "diffusion_pytorch_model.bin"))


def _copy(folders, tmp_path, name="diffusers"):
    dst = tmp_path / "ma"
    shutil.copytree(folders[name], dst)
    return dst


@pytest.mark.parametrize("remove, message", [
    ("appearance_encoder", "appearance encoder.*zcxu-eric/MagicAnimate/tree/main/appearance_encoder"),
    ("densepose_controlnet", "DensePose ControlNet.*densepose_controlnet"),
    ("temporal_attention", "temporal attention.*temporal_attention.ckpt"),
    ("unet", "no Stable Diffusion 1.5 UNet.*stable-diffusion-v1-5.*v1-5-pruned-emaonly"),
])
def test_missing_file_names_it_and_where_to_download(folders, tmp_path, remove, message):
    dst = _copy(folders, tmp_path)
    shutil.rmtree(dst / remove)
    if remove != "appearance_encoder":
        assert magicanimate.is_magicanimate_folder(dst)
    with pytest.raises(CheckpointError, match=message):
        magicanimate.load_models(dst, device="cpu")


def test_truncated_file_names_it(folders, tmp_path):
    dst = _copy(folders, tmp_path)
    path = dst / "densepose_controlnet" / "diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        poseanimate.load_models(dst, device="cpu")
    text = str(e.value)
    assert str(path) in text and "download it again" in text and "zcxu-eric/MagicAnimate" in text
    assert "\n" not in text


def test_wrong_file_in_a_release_folder(folders, tmp_path):
    dst = _copy(folders, tmp_path)
    shutil.copy(dst / "temporal_attention" / "temporal_attention.ckpt", dst / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"unet.*expected the Stable Diffusion 1.5 UNet.*motion_module"):
        magicanimate.load_models(dst, device="cpu")


def test_unet_folder_preferred_over_a_single_file_checkpoint(folders, tmp_path):
    dst = _copy(folders, tmp_path)
    shutil.copy(os.path.join(folders["ldm"], "v1-5-pruned-emaonly.safetensors"), dst)
    files = magicanimate.find_files(dst)
    assert os.path.basename(os.path.dirname(files["unet"])) == "unet"


def test_shared_fixture_loads():
    models = poseanimate.load_models(shared_fixture("ma-shared"), device="cpu")
    assert models.family == "magicanimate"
    assert models.denoising_unet.config.block_out_channels == (32, 32, 32, 64)


def test_transformers_return_contiguous_maps():
    # Like the reference (`.contiguous()` after the permute back): a channels-last map would send the next
    # GroupNorm pooled over frames to torch's channels-last kernel, which cost 1e-3 of parity in float32.
    from poseanimate.models.motion_module import MotionModule
    from poseanimate.models.unet import SpatialTransformer
    torch.manual_seed(0)
    x = torch.randn(4, 32, 4, 2)
    spatial = SpatialTransformer(32, 8, 16, 32, 0)
    assert spatial(x, torch.randn(4, 3, 16), AttentionState()).is_contiguous()
    assert MotionModule(32)(x, 2).is_contiguous()
