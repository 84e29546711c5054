"""TCAN's pose temperature map in UniAnimate's temporal transformers (input and output blocks, not the
middle block), on tiny random networks."""

import pytest
import torch

import poseanimate
from poseanimate.models.unianimate import TemporalTransformer, UniAnimateConfig, UniAnimateUNet
from tiny_models import write_unianimate


def test_a_pixels_temperature_divides_its_attention_logits():
    """Uniform temperature 2 = every temporal query halved; a map applies that per pixel and leaves tau=1 alone."""
    torch.manual_seed(0)
    block = TemporalTransformer(32, 2, 8).eval()
    halved = TemporalTransformer(32, 2, 8).eval()
    halved.load_state_dict(block.state_dict())
    for b in halved.transformer_blocks:
        b.attn1.to_q.weight.data /= 2
        b.attn2.to_q.weight.data /= 2
    batch, frames, h, w = 2, 3, 2, 3
    x = torch.randn(batch * frames, 32, h, w)
    tau = torch.ones(batch, h, w)
    tau[0, 0, 1] = tau[1, 1, 2] = tau[1, 0, 0] = 2.0
    with torch.no_grad():
        plain, hot, expected_hot = block(x, batch), block(x, batch, tau), halved(x, batch)
    mask = (tau == 2).repeat_interleave(frames, 0)[:, None].expand_as(x)
    torch.testing.assert_close(hot[mask], expected_hot[mask], atol=2e-6, rtol=0)
    torch.testing.assert_close(hot[~mask], plain[~mask], atol=0, rtol=0)
    assert (hot[mask] - plain[mask]).abs().max() > 1e-3


def test_the_middle_block_is_left_alone(monkeypatch):
    torch.manual_seed(0)
    unet = UniAnimateUNet(UniAnimateConfig(dim=32, dim_mult=(1, 1, 1, 1), context_dim=64, head_dim=8)).eval()
    seen = {}
    original = TemporalTransformer.forward

    def record(self, x, batch, temperature=None):
        seen[id(self)] = temperature is not None
        return original(self, x, batch, temperature)

    monkeypatch.setattr(TemporalTransformer, "forward", record)
    b, f, h, w = 1, 2, 8, 8
    grids = [(8, 8), (4, 4), (2, 2), (1, 1)]
    with torch.no_grad():
        unet(torch.randn(b, f, 4, h, w), 500, torch.randn(b, 81, 64), torch.randn(b, f, 8, h, w),
             torch.randn(b, 12, h, w), {g: torch.full((b, *g), 2.0) for g in grids})
    middle = {id(m) for m in unet.middle_block.modules() if isinstance(m, TemporalTransformer)}
    others = {id(m) for m in unet.modules() if isinstance(m, TemporalTransformer)} - middle
    assert middle and others and not any(seen[i] for i in middle) and all(seen[i] for i in others)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ua") / "unianimate.pth"
    write_unianimate(str(path), context_dim=64, seed=1)
    models = poseanimate.load_models(str(path.parent), device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    h, w = 4, 4
    inputs = dict(reference_latents=torch.randn(1, 4, h, w, generator=g), image_embeds=torch.randn(1, 64, generator=g),
                  text_embeds=torch.randn(1, 77, 64, generator=g), reference_image=torch.rand(8 * h, 8 * w, 3),
                  reference_pose=torch.rand(8 * h, 8 * w, 3, generator=g), seed=3, steps=2, cfg=2.5,
                  context={"length": 4, "overlap": 2})
    return models, inputs


def test_animate_applies_the_map_where_poses_leave_black(tiny):
    models, inputs = tiny
    poses = torch.zeros(5, 32, 32, 3)
    poses[:, 12:20, 14:18] = 1.0  # a stroke on black: the rest of the frame is background
    off = poseanimate.animate(models, pose_images=poses, **inputs)
    hot = poseanimate.animate(models, pose_images=poses, pose_temperature=3.0, **inputs)
    assert (hot - off).abs().max() > 1e-3
    drawn_everywhere = poses + 0.2  # no black pixel: tau = 1 everywhere, nothing changes
    torch.testing.assert_close(poseanimate.animate(models, pose_images=drawn_everywhere, pose_temperature=3.0, **inputs),
                               poseanimate.animate(models, pose_images=drawn_everywhere, **inputs), atol=0, rtol=0)
