"""The VAE of an LDM single-file checkpoint (UniAnimate's v2-1_512-ema-pruned.ckpt) read into diffusers'
AutoencoderKL (models/sd_checkpoint.vae_to_diffusers), checked against diffusers' own converter."""

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from cli_fixtures import ldm_vae as to_ldm
from poseanimate.models.sd_checkpoint import is_ldm_vae, vae_to_diffusers

SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_VAE = dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE).eval()
    sd = {k: v + 0.01 * torch.randn_like(v) for k, v in vae.state_dict().items()}
    vae.load_state_dict(sd)
    return vae, sd


def test_the_test_layout_is_ldms(tiny):
    _, sd = tiny
    ldm = to_ldm(sd, 2)
    back = convert_ldm_vae_checkpoint(ldm, {**AutoencoderKL(**TINY_VAE).config})
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_checkpoint_vae_equals_diffusers_conversion_exactly(tiny):
    vae, sd = tiny
    ldm = {**to_ldm(sd, 2), "model.diffusion_model.out.2.weight": torch.zeros(1),
           "cond_stage_model.model.ln_final.weight": torch.zeros(1)}
    assert is_ldm_vae(ldm)
    config, converted = vae_to_diffusers(ldm)
    assert converted.keys() == sd.keys()
    assert all(torch.equal(converted[k], sd[k]) for k in sd)
    rebuilt = AutoencoderKL(**config).eval()
    rebuilt.load_state_dict(converted, strict=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean, rtol=0, atol=0)
        z = torch.randn(1, 4, 8, 8)
        torch.testing.assert_close(rebuilt.decode(z).sample, vae.decode(z).sample, rtol=0, atol=0)


def test_sd_sized_key_set_and_config():
    with torch.device("meta"):
        vae = AutoencoderKL(**SD_VAE)
    sd = vae.state_dict()
    config, converted = vae_to_diffusers(to_ldm(sd, 4))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    assert config["block_out_channels"] == (128, 256, 512, 512) and config["layers_per_block"] == 2
    assert config["latent_channels"] == 4 and config["scaling_factor"] == 0.18215
