"""Temporal smoothing of keypoint tracks.

Each keypoint of each person slot (the n-th person of every frame) is a track over frames.
Filters run only over the runs of frames where the point is present: a missing point stays
missing, and a run after a gap starts afresh instead of being pulled towards where the point
was before it disappeared. Confidences are left as they are. Coordinates are filtered in
units of the canvas's longer side, so the parameters do not depend on the resolution.

* ``one_euro``: the 1-euro filter (Casiez et al., CHI 2012), causal, adaptive: strong
  smoothing when a point is still, little lag when it moves fast.
* ``savgol``: Savitzky-Golay (local least-squares polynomial), non-causal, keeps peaks; runs
  shorter than the window use the longest odd window that fits, or are left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .keypoints import PARTS, Person, PoseFrame, missing_points, present_mask, PART_SIZES


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(track: np.ndarray, present: np.ndarray, fps: float = 24.0, min_cutoff: float = 0.5,
             beta: float = 12.0, d_cutoff: float = 1.0) -> np.ndarray:
    """1-euro filter over [F, P, D] positions with presence [F, P]; restarts after every gap."""
    if fps <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
        raise ValueError(
            f"one_euro needs fps > 0, min_cutoff > 0, d_cutoff > 0, beta >= 0; got fps={fps}, "
            f"min_cutoff={min_cutoff}, beta={beta}, d_cutoff={d_cutoff}"
        )
    dt = 1.0 / fps
    out = np.array(track, dtype=np.float64, copy=True)
    state = np.zeros(track.shape[1:])
    speed = np.zeros(track.shape[1:])
    alive = np.zeros(track.shape[1], dtype=bool)
    a_d = _alpha(d_cutoff, dt)
    for f in range(track.shape[0]):
        here = present[f]
        fresh = here & ~alive
        going = here & alive
        state[fresh] = track[f, fresh]
        speed[fresh] = 0.0
        if going.any():
            x = track[f, going]
            dx = (x - state[going]) / dt
            speed[going] = a_d * dx + (1 - a_d) * speed[going]
            cutoff = min_cutoff + beta * np.linalg.norm(speed[going], axis=-1, keepdims=True)
            a = _alpha(cutoff, dt)
            state[going] = a * x + (1 - a) * state[going]
        out[f, here] = state[here]
        alive = here
    return out


def savgol_coefficients(window: int, polyorder: int) -> np.ndarray:
    """[window, window] matrix: row k gives the fitted value at position k of the window."""
    half = window // 2
    positions = np.arange(window) - half
    vandermonde = positions[:, None] ** np.arange(polyorder + 1)[None, :]
    return vandermonde @ np.linalg.pinv(vandermonde)


def _savgol_run(values: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    n = len(values)
    window = min(window, n if n % 2 else n - 1)
    if window <= polyorder or window < 3:
        return values
    fit = savgol_coefficients(window, polyorder)
    half = window // 2
    out = values.copy()
    windows = sliding_window_view(values, window, axis=0)
    out[half:n - half] = np.einsum("n...w,w->n...", windows, fit[half])
    out[:half] = np.einsum("kw,w...->k...", fit[:half], values[:window])
    out[n - half:] = np.einsum("kw,w...->k...", fit[half + 1:], values[n - window:])
    return out


def savgol(track: np.ndarray, present: np.ndarray, window: int = 7, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay over [F, P, D] positions with presence [F, P], per run of present frames."""
    if window < 3 or window % 2 == 0 or not 0 <= polyorder < window:
        raise ValueError(f"savgol needs an odd window >= 3 and 0 <= polyorder < window; got window={window}, "
                         f"polyorder={polyorder}")
    out = np.array(track, dtype=np.float64, copy=True)
    for point in range(track.shape[1]):
        for start, stop in _runs(present[:, point]):
            out[start:stop, point] = _savgol_run(track[start:stop, point], window, polyorder)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.where(edges == 1)[0], np.where(edges == -1)[0]))


@dataclass(frozen=True)
class Smoother:
    name: str
    description: str
    filter: Callable[..., np.ndarray]


def no_smoothing(track: np.ndarray, present: np.ndarray) -> np.ndarray:
    return np.array(track, dtype=np.float64, copy=True)


SMOOTHERS: dict[str, Smoother] = {
    "none": Smoother("none", "keypoints as detected", no_smoothing),
    "one_euro": Smoother("one_euro", "1-euro filter: causal, adaptive to speed", one_euro),
    "savgol": Smoother("savgol", "Savitzky-Golay: local polynomial fit over a window", savgol),
}


def get_smoother(name: str) -> Smoother:
    try:
        return SMOOTHERS[name]
    except KeyError:
        raise ValueError(f"unknown smoothing method {name!r}; valid choices: {', '.join(SMOOTHERS)}") from None


def smooth_frames(frames: Sequence[PoseFrame], method: str = "one_euro", **params) -> list[PoseFrame]:
    """Smoothed copies of ``frames`` (see the module docstring); ``params`` go to the filter
    (``one_euro``: fps, min_cutoff, beta, d_cutoff; ``savgol``: window, polyorder)."""
    smoother = get_smoother(method)
    frames = [f.copy() for f in frames]
    if not frames:
        return frames
    units = np.array([max(f.width, f.height) for f in frames], dtype=np.float64)
    slots = max(len(f.people) for f in frames)
    for slot in range(slots):
        owners = [i for i, f in enumerate(frames) if slot < len(f.people)]
        for part in PARTS:
            stacked = np.stack([
                frames[i].people[slot].part(part) if slot < len(frames[i].people) else missing_points(PART_SIZES[part])
                for i in range(len(frames))
            ])
            present = np.stack([present_mask(p) for p in stacked])
            xy = np.nan_to_num(stacked[..., :2] / units[:, None, None])
            filtered = smoother.filter(xy, present, **params) * units[:, None, None]
            for i in owners:
                person: Person = frames[i].people[slot]
                points = person.part(part)
                mask = present[i]
                points[mask, :2] = filtered[i, mask]
    return frames
