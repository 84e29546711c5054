"""TCAN's pose-driven temperature map against numbers recorded from TCAN's own functions
(tests/data/ptm/README.md), and its plumbing through the motion modules."""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from poseanimate.models.attention import Attention
from poseanimate.models.motion_module import position_encoding, temporal_attention
from poseanimate.models.unet import AttentionState, UNet, UNetConfig
from poseanimate.sampling.temperature import (PoseTemperature, grid_sizes, resize_map, temperature_map,
                                              window_temperature)
from conftest import DATA

FRAMES = 4
# cv2.distanceTransform itself varies by one float32 ulp between calls on the same input (seen with
# opencv 4.10 and 5.0): 3.8e-6 at a distance of 30 px, 2.5e-7 in tau here
MAP_TOLERANCE = 1e-6
TCAN = load_file(os.path.join(DATA, "ptm", "tcan_attention.safetensors"))


def _attention():
    attn = Attention(16, 8)
    attn.load_state_dict({k[len("attn."):]: v for k, v in TCAN.items() if k.startswith("attn.")})
    return attn.eval()


def _tempered(attn, hidden, tau_grid):
    """The motion module's temporal attention on ``hidden`` laid out like TCAN's ``(b f) d c``."""
    bf, d, c = hidden.shape
    b = bf // FRAMES
    x = hidden.reshape(b, FRAMES, d, c).transpose(1, 2).reshape(b * d, FRAMES, c)
    x = x + position_encoding(FRAMES, c, x.device, x.dtype)
    tau = None if tau_grid is None else tau_grid.reshape(1, d).expand(b, d).reshape(b * d, 1, 1)
    with torch.no_grad():
        out = temporal_attention(attn, x, tau)
    return out.reshape(b, d, FRAMES, c).transpose(1, 2).reshape(bf, d, c)


@pytest.mark.parametrize("case", ["square", "nonsquare"])
def test_map_equals_tcan(case):
    poses = TCAN[f"{case}_poses"]
    torch.testing.assert_close(temperature_map(poses, 3.0), TCAN[f"{case}_tau"], rtol=0, atol=MAP_TOLERANCE)
    # float images in [0, 1] (what the nodes carry) give the same map
    torch.testing.assert_close(temperature_map(poses.float() / 255, 3.0), TCAN[f"{case}_tau"], rtol=0,
                               atol=MAP_TOLERANCE)


def test_window_maps_on_the_square_grids_equal_tcans():
    grids = window_temperature(TCAN["square_poses"].numpy(), range(FRAMES), 3.0, [(8, 8), (4, 4)])
    for s in (8, 4):
        torch.testing.assert_close(grids[s, s], TCAN[f"square_tau_{s}"], rtol=0, atol=MAP_TOLERANCE)


@pytest.mark.parametrize("s", [8, 4])
def test_tempered_attention_equals_tcan_on_a_square_video(s):
    attn = _attention()
    tau = window_temperature(TCAN["square_poses"], range(FRAMES), 3.0, [(s, s)])[s, s]
    out = _tempered(attn, TCAN[f"square_hidden_{s}"], tau)
    torch.testing.assert_close(out, TCAN[f"square_out_{s}"], rtol=0, atol=1e-5)
    plain = _tempered(attn, TCAN[f"square_hidden_{s}"], None)
    assert (plain - TCAN[f"square_out_{s}"]).abs().max() > 1e-2  # the map matters at this tolerance


def test_nonsquare_video_uses_the_real_grid():
    attn = _attention()
    tau = window_temperature(TCAN["nonsquare_poses"], range(FRAMES), 3.0, [(8, 6)])[8, 6]
    torch.testing.assert_close(tau, TCAN["nonsquare_tau_grid"], rtol=0, atol=MAP_TOLERANCE)
    out = _tempered(attn, TCAN["nonsquare_hidden"], tau)
    torch.testing.assert_close(out, TCAN["nonsquare_out"], rtol=0, atol=1e-5)
    # the same numbers laid on another grid of 48 cells (6 high x 8 wide, read row-major) differ
    wrong = resize_map(TCAN["nonsquare_tau"], (6, 8)).reshape(8, 6)
    assert (_tempered(attn, TCAN["nonsquare_hidden"], wrong) - TCAN["nonsquare_out"]).abs().max() > 1e-2


def test_background_only_window_is_neutral_and_strokes_are_one():
    poses = np.zeros((3, 16, 24, 3), np.uint8)
    assert torch.equal(temperature_map(poses, 3.0), torch.ones(16, 24))
    poses[1, 4, 5] = (0, 0, 9)
    tau = temperature_map(poses, 2.0)
    assert tau[4, 5] == 1 and tau.min() == 1
    corner = 2.0 * np.hypot(11 - 4, 23 - 5) / np.hypot(8, 12) + 1
    assert tau[11, 23].item() == pytest.approx(corner, rel=1e-6)


def test_grid_sizes_follow_the_unets_downsampling():
    assert grid_sizes(32, 16, 4) == [(32, 16), (16, 8), (8, 4), (4, 2)]
    assert grid_sizes(9, 5, 3) == [(9, 5), (5, 3), (3, 2)]
    unet = UNet(UNetConfig(block_out_channels=(32, 32, 32, 32), cross_attention_dim=32))
    seen = set()
    x = torch.zeros(1, 4, 9, 5)
    hooks = [b.register_forward_hook(lambda mod, inp, out: seen.add(tuple(inp[0].shape[-2:])))
             for b in unet.modules() if isinstance(b, torch.nn.GroupNorm)]
    with torch.no_grad():
        unet(x, 1, torch.zeros(1, 1, 32), AttentionState())
    for h in hooks:
        h.remove()
    assert seen == set(grid_sizes(9, 5, 4))


def test_pose_temperature_batches_branch_major_and_caches_per_window():
    rng = np.random.default_rng(0)
    poses = np.zeros((6, 32, 16, 3), np.uint8)
    for f in range(6):
        poses[f, rng.integers(0, 32), rng.integers(0, 16)] = 200
    temp = PoseTemperature(poses, 3.0, grid_sizes(4, 2, 2))
    wins = [[0, 1, 2], [3, 4, 5]]
    maps = temp(wins, branches=2)
    assert set(maps) == {(4, 2), (2, 1)}
    first = window_temperature(poses, wins[0], 3.0, [(4, 2)])[4, 2]
    second = window_temperature(poses, wins[1], 3.0, [(4, 2)])[4, 2]
    assert not torch.equal(first, second)
    for row, expected in enumerate([first, second, first, second]):
        assert torch.equal(maps[4, 2][row], expected)
    cached = temp.cache[(0, 1, 2)]
    temp(wins[:1])
    assert temp.cache[(0, 1, 2)] is cached and len(temp.cache) == 2


def _tiny_unet():
    torch.manual_seed(0)
    unet = UNet(UNetConfig(block_out_channels=(32, 32, 32, 32), cross_attention_dim=32, motion_modules=True))
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return unet.eval()


def test_unet_applies_the_map_in_down_and_up_motion_modules_only():
    unet = _tiny_unet()
    x = torch.randn(2 * 4, 4, 8, 8)
    context = torch.randn(1, 1, 32)
    grids = grid_sizes(8, 8, 4)
    ones = {g: torch.ones(2, *g) for g in grids}
    rng = torch.Generator().manual_seed(1)
    hot = {g: 1 + 2 * torch.rand(2, *g, generator=rng) for g in grids}
    calls = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: calls.append((name, inp[2] is not None)))
             for name, m in unet.named_modules() if type(m).__name__ == "MotionModule"]
    with torch.no_grad():
        plain = unet(x, 10, context, AttentionState(frames=4))
        unit = unet(x, 10, context, AttentionState(frames=4, temperature=ones))
        tempered = unet(x, 10, context, AttentionState(frames=4, temperature=hot))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(unit, plain, rtol=0, atol=1e-5)
    assert (tempered - plain).abs().max() > 1e-3
    with_map = {name: used for name, used in calls[-len(hooks):]}
    assert not with_map.pop("mid_block.motion_modules.0")
    assert all(with_map.values()) and len(with_map) == 4 * 2 + 4 * 3
