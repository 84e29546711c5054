"""Temporal smoothing of keypoints."""

import numpy as np
import pytest

from poseanimate.pose import smooth
from poseanimate.pose.keypoints import Person, PoseFrame, missing_points, present_mask

FPS = 24.0


def _track(frames=120, seed=0, noise=4.0):
    """A swaying point (about 0.2 Hz, tens of pixels) with detector-like jitter."""
    t = np.arange(frames) / FPS
    truth = np.stack([300 + 60 * np.sin(2 * np.pi * 0.2 * t), 400 + 40 * np.cos(2 * np.pi * 0.15 * t)], axis=1)
    noisy = truth + np.random.default_rng(seed).normal(0, noise, truth.shape)
    return truth, noisy


def _frames(xy_per_frame, width=720, height=960):
    frames = []
    for xy in xy_per_frame:
        body = missing_points(18)
        if xy is not None:
            body[:] = (*xy, 0.8)
        frames.append(PoseFrame([Person(body=body)], width, height))
    return frames


@pytest.mark.parametrize("method, params", [
    ("one_euro", {"fps": FPS}),
    ("savgol", {"window": 9, "polyorder": 2}),
])
def test_jitter_is_removed(method, params):
    truth, noisy = _track()
    out = smooth.smooth_frames(_frames(noisy), method, **params)
    smoothed = np.stack([f.people[0].body[0, :2] for f in out])
    before = np.sqrt(((noisy - truth) ** 2).mean())
    after = np.sqrt(((smoothed - truth) ** 2).mean())
    assert after < 0.95 * before
    jitter_before = np.abs(np.diff(noisy, 2, axis=0)).mean()
    jitter_after = np.abs(np.diff(smoothed, 2, axis=0)).mean()
    assert jitter_after < 0.3 * jitter_before
    np.testing.assert_array_equal(np.stack([f.people[0].body[:, 2] for f in out]), 0.8)


def test_one_euro_steadies_a_still_point_and_follows_a_fast_one():
    rng = np.random.default_rng(5)
    still = 500 + rng.normal(0, 3, (48, 2))
    ramp = 500 + np.arange(48)[:, None] * np.array([[15.0, 0.0]])  # 360 px/s
    out = smooth.smooth_frames(_frames(list(still) + list(ramp)), "one_euro", fps=FPS)
    xy = np.stack([f.people[0].body[0, :2] for f in out])
    assert xy[12:48].std(axis=0).max() < 0.7 * still[12:].std(axis=0).min()
    lag = np.abs(xy[60:, 0] - ramp[12:, 0]).mean()
    assert lag < 10.0  # under one frame of motion (15 px) behind


@pytest.mark.parametrize("method", ["one_euro", "savgol"])
def test_missing_stays_missing_and_gaps_are_not_smeared(method):
    before = [np.array([100.0, 200.0])] * 10
    after = [np.array([300.0, 250.0])] * 10
    frames = _frames(before + [None, None] + after)
    frames[4].people[0].body[7] = (np.nan, np.nan, 0.0)
    out = smooth.smooth_frames(frames, method)
    for i in (10, 11):
        assert not present_mask(out[i].people[0].body).any()
    assert not present_mask(out[4].people[0].body)[7]
    np.testing.assert_allclose(out[12].people[0].body[0, :2], (300, 250))  # fresh start after the gap
    np.testing.assert_allclose(out[9].people[0].body[0, :2], (100, 200))
    np.testing.assert_allclose(out[5].people[0].body[7, :2], (100, 200))


def test_people_and_frames_without_them_are_handled():
    truth, noisy = _track(frames=20)
    frames = _frames(noisy)
    frames[3] = PoseFrame([], 720, 960)
    frames[6].people.append(Person(body=np.column_stack([np.full((18, 2), 50.0), np.full(18, 0.9)])))
    out = smooth.smooth_frames(frames, "savgol", window=5)
    assert [len(f.people) for f in out] == [len(f.people) for f in frames]
    np.testing.assert_allclose(out[6].people[1].body[:, :2], 50.0)
    assert frames[5].people[0].body[0, 0] == noisy[5, 0]  # inputs untouched


def test_savgol_keeps_polynomials_exactly():
    t = np.arange(30, dtype=float)
    quadratic = np.stack([3 + 2 * t + 0.5 * t ** 2, 100 - t], axis=1)[:, None, :]
    out = smooth.savgol(quadratic, np.ones((30, 1), bool), window=7, polyorder=2)
    np.testing.assert_allclose(out, quadratic, atol=1e-8)


def test_short_runs_use_a_shorter_window_or_are_left_alone():
    values = np.array([[0.0], [10.0], [0.0], [10.0], [0.0]])[:, None, :]
    present = np.ones((5, 1), bool)
    out = smooth.savgol(values, present, window=9, polyorder=1)
    assert not np.allclose(out, values)  # 5-frame window instead of 9
    two = smooth.savgol(values[:2], present[:2], window=9, polyorder=1)
    np.testing.assert_array_equal(two, values[:2])


def test_unknown_method_and_bad_parameters_are_named():
    frames = _frames([np.array([1.0, 2.0])] * 3)
    with pytest.raises(ValueError, match="none, one_euro, savgol"):
        smooth.smooth_frames(frames, "kalman")
    with pytest.raises(ValueError, match="odd window"):
        smooth.smooth_frames(frames, "savgol", window=4)
    with pytest.raises(ValueError, match="fps > 0"):
        smooth.smooth_frames(frames, "one_euro", fps=0)
    assert smooth.smooth_frames([], "one_euro") == []
    same = smooth.smooth_frames(frames, "none")
    np.testing.assert_array_equal(same[1].people[0].body, frames[1].people[0].body)
    assert same[1].people[0] is not frames[1].people[0]
