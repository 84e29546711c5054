"""Context windows: schedules, fusion weights and the windowed, guided denoiser's arithmetic."""

import itertools

import pytest
import torch

from poseanimate.sampling import context as C
from poseanimate.sampling.engine import WindowedDenoiser

CASES = [(n, length, overlap) for n, length, overlap in itertools.product(
    (1, 2, 5, 8, 12, 16, 25, 48, 97), (1, 4, 8, 16, 24), (0, 1, 2, 4, 7)) if overlap < length]


def opts(**kw):
    return C.ContextOptions.from_dict(kw)


@pytest.mark.parametrize("schedule", list(C.SCHEDULES))
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("closed_loop", [None, True, False])
def test_every_frame_is_covered_by_windows_of_the_context_length(schedule, stride, closed_loop):
    for n, length, overlap in CASES:
        o = opts(length=length, overlap=overlap, stride=stride, schedule=schedule, closed_loop=closed_loop)
        for step in range(6):
            wins = C.windows(n, o, step, 6)
            assert wins, (n, o, step)
            covered = set(itertools.chain.from_iterable(wins))
            assert covered == set(range(n)), (n, o, step, wins)
            for w in wins:
                assert len(w) == min(length, n)
                assert all(0 <= f < n for f in w)


def test_static_windows_never_wrap_and_end_on_the_last_frame():
    for n, length, overlap in CASES:
        o = opts(length=length, overlap=overlap, schedule="static")
        for step in range(4):
            wins = C.windows(n, o, step, 4)
            assert wins == C.windows(n, o, 0, 4), "static windows do not move"
            for w in wins:
                assert w == list(range(w[0], w[0] + len(w))), (n, o, w)
            assert wins[0][0] == 0 and wins[-1][-1] == n - 1
            starts = [w[0] for w in wins]
            assert starts == sorted(set(starts))
            if n > length:
                hops = [b - a for a, b in zip(starts, starts[1:])]
                assert all(h <= length - overlap for h in hops), (n, o, starts)


def test_static_example():
    assert C.windows(10, opts(length=4, overlap=1, schedule="static")) == [
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert C.windows(11, opts(length=4, overlap=1, schedule="static")) == [
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [7, 8, 9, 10]]


def test_moore_is_the_reference_schedule():
    """12 frames, window 8, overlap 4 (the parity fixture): the last window wraps around."""
    assert C.windows(12, opts(length=8, overlap=4, schedule="moore")) == [
        list(range(8)), list(range(4, 12)), [8, 9, 10, 11, 0, 1, 2, 3]]
    open_loop = opts(length=8, overlap=4, schedule="moore", closed_loop=False)
    assert C.windows(12, open_loop) == [list(range(8)), list(range(4, 12))]
    for step in range(5):
        assert C.windows(30, opts(length=8, schedule="moore"), step, 5) == C.windows(30, opts(length=8, schedule="moore"))


def test_looped_closed_loop_adds_the_wrapping_window():
    closed = C.windows(12, opts(length=8, overlap=4, schedule="looped", closed_loop=True))
    open_ = C.windows(12, opts(length=8, overlap=4, schedule="looped"))
    assert closed == open_ + [[8, 9, 10, 11, 0, 1, 2, 3]]


def test_uniform_windows_shift_between_steps():
    o = opts(length=8, overlap=2, schedule="uniform")
    first = [w[0] for w in C.windows(40, o, 0, 4)]
    second = [w[0] for w in C.windows(40, o, 1, 4)]
    assert first != second


def test_stride_gives_dilated_windows():
    wins = C.windows(40, opts(length=8, overlap=2, stride=2, schedule="looped"))
    gaps = {b - a for w in wins for a, b in zip(w, w[1:]) if b > a}
    assert gaps == {1, 2}


@pytest.mark.parametrize("fuse", list(C.FUSE))
def test_fusion_weights_are_positive_and_sized_like_the_window(fuse):
    for n, length, overlap in CASES:
        o = opts(length=length, overlap=overlap, fuse=fuse)
        for w in C.windows(n, o):
            weights = C.window_weights(w, n, o)
            assert weights.shape == (len(w),) and (weights > 0).all()


def test_pyramid_and_overlap_linear_weights():
    o = opts(length=6, overlap=2, fuse="pyramid")
    assert C.window_weights(list(range(6)), 20, o).tolist() == [1, 2, 3, 3, 2, 1]
    o = opts(length=6, overlap=2, fuse="overlap-linear")
    assert C.window_weights(list(range(6)), 20, o).tolist() == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])
    assert C.window_weights(list(range(7, 13)), 20, o).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3])
    assert C.window_weights(list(range(14, 20)), 20, o).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])


def test_bad_options_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid schedules: static, uniform, looped, moore"):
        opts(schedule="loop")
    with pytest.raises(ValueError, match="valid methods: flat, pyramid, overlap-linear"):
        opts(fuse="gauss")
    with pytest.raises(ValueError, match="overlap"):
        opts(length=4, overlap=4)
    with pytest.raises(ValueError, match="valid options"):
        C.ContextOptions.from_dict({"frames": 4})


def test_count_unet_passes():
    o = opts(length=8, overlap=4, schedule="moore")
    assert C.count_unet_passes(12, o, steps=4) == 3 * 4 * 2
    assert C.count_unet_passes(12, o, steps=4, guidance=False) == 3 * 4


def _denoiser(o, cfg, prediction):
    """A WindowedDenoiser over a window model that predicts ``prediction(window, branch)`` for every frame."""
    seen = []

    def model(x, t, windows, branches):
        assert x.shape[:2] == (len(windows), len(windows[0]))
        assert tuple(branches) == (("uncond", "cond") if cfg > 1 else ("cond",))
        seen.append(windows)
        out = torch.stack([torch.stack([prediction(w, b) for w in windows]) for b in range(len(branches))])
        return out[..., None, None, None].expand(len(branches), len(windows), len(windows[0]), 4, 2, 2).float()

    return WindowedDenoiser(model, cfg=cfg, opts=o, steps=1), seen


def test_window_model_sees_each_windows_latents():
    """The latents handed to the window model are the frames its window names, in window order."""
    o = opts(length=5, overlap=2, schedule="moore", window_batch=2)
    x = torch.arange(13, dtype=torch.float32)[:, None, None, None].expand(13, 4, 2, 2).clone()
    got = []

    def model(xw, t, windows, branches):
        for k, w in enumerate(windows):
            got.append(w)
            torch.testing.assert_close(xw[k, :, 0, 0, 0], torch.tensor(w, dtype=torch.float32), atol=0, rtol=0)
        return xw[None].expand(len(branches), *xw.shape)

    out = WindowedDenoiser(model, cfg=2.0, opts=o, steps=1)(x, torch.tensor(999))
    assert got == C.windows(13, o)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fuse", list(C.FUSE))
@pytest.mark.parametrize("schedule", ["static", "looped", "uniform"])
def test_fusion_is_a_normalised_weighted_average(fuse, schedule):
    """Every window predicts the frame index: fused, each frame must get exactly its index back,
    whatever the weights; with guidance s, uncond u and cond c give u + s (c - u)."""
    n = 29
    o = opts(length=8, overlap=3, schedule=schedule, fuse=fuse, window_batch=3)
    d, seen = _denoiser(o, 1.0, lambda w, b: torch.tensor(w, dtype=torch.float32))
    out = d(torch.zeros(n, 4, 2, 2), torch.tensor(999))
    torch.testing.assert_close(out[:, 0, 0, 0], torch.arange(n, dtype=torch.float32), atol=1e-5, rtol=0)
    assert [len(g) for g in seen][:-1] == [3] * (len(seen) - 1)
    assert sum(len(g) for g in seen) == len(C.windows(n, o))

    d, _ = _denoiser(o, 2.5, lambda w, b: torch.tensor(w, dtype=torch.float32) * (1 + b))
    out = d(torch.zeros(n, 4, 2, 2), torch.tensor(999))
    idx = torch.arange(n, dtype=torch.float32)
    torch.testing.assert_close(out[:, 0, 0, 0], idx + 2.5 * (2 * idx - idx), atol=1e-4, rtol=0)


def test_moore_without_guidance_sums_overlapping_windows():
    """The reference divides by the window count only when it applies guidance (see
    tests/test_engine_parity.py for the numbers it produces)."""
    o = opts(length=8, overlap=4, schedule="moore", fuse="flat")
    d, _ = _denoiser(o, 1.0, lambda w, b: torch.ones(len(w)))
    out = d(torch.zeros(12, 4, 2, 2), torch.tensor(999))
    assert out[:, 0, 0, 0].tolist() == [2.0] * 12


def test_freenoise_windows_reuse_shuffled_noise():
    o = opts(length=8, overlap=2, freenoise=True)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(30, 4, 2, 2, generator=g)
    noise = C.freenoise(base, o, torch.Generator().manual_seed(4))
    assert torch.equal(noise[:8], base[:8])
    for start in range(8, 30, 6):
        prev = {tuple(r.flatten().tolist()) for r in noise[start - 8:start]}
        for row in noise[start:start + 6]:
            assert tuple(row.flatten().tolist()) in prev
