"""Context windows: which frames go through the UNet together, and how overlapping windows fuse.

Schedules (``SCHEDULES``), each ``fn(num_frames, opts, step, steps) -> list of windows``:

* ``static``: windows at 0, L-O, 2(L-O), ...; the last one pinned to the end; no wrap, no stride.
* ``uniform``: AnimateDiff's ordered-halving schedule; windows shift every step and wrap around.
* ``looped``: the same windows as ``uniform`` at step 0 on every step (they wrap around the end);
  ``closed_loop`` adds the last wrapping window.
* ``moore``: the reference pipeline: ``looped`` with ``closed_loop`` on by default.

Fusion weights (``FUSE``), each ``fn(length, window, num_frames, opts) -> weights``: ``flat``,
``pyramid`` (w_i = min(i+1, L-i)) and ``overlap-linear`` (ramps only across the overlap, none at
the video's ends). Overlapping predictions are averaged per frame: sum(w * pred) / sum(w).
"""

import math
import numbers
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class ContextOptions:
    length: int = 24
    overlap: int = 4
    stride: int = 1
    schedule: str = "static"
    fuse: str = "pyramid"
    closed_loop: bool | None = None
    window_batch: int = 1
    freenoise: bool = False

    @classmethod
    def from_dict(cls, d):
        if d is None:
            return cls()
        if isinstance(d, cls):
            return d
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown context option(s) {unknown}; valid options: {', '.join(valid)}")
        opts = cls(**d)
        opts.validate()
        return opts

    def validate(self):
        for name in ("length", "overlap", "stride", "window_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"context {name} must be a whole number, got {value!r} ({type(value).__name__})")
        get_schedule(self.schedule)
        get_fuse(self.fuse)
        if self.length < 1:
            raise ValueError(f"context length must be at least 1, got {self.length}")
        if not 0 <= self.overlap < self.length:
            raise ValueError(f"context overlap must be in [0, length); got overlap {self.overlap} with length {self.length}")
        if self.stride < 1:
            raise ValueError(f"context stride must be at least 1, got {self.stride}")
        if self.window_batch < 1:
            raise ValueError(f"window_batch must be at least 1, got {self.window_batch}")

    @property
    def loops(self):
        return self.schedule == "moore" if self.closed_loop is None else bool(self.closed_loop)


def ordered_halving(val):
    """The bit-reversed fraction of ``val`` (64 bits), AnimateDiff's shift sequence 0, 1/2, 1/4, 3/4, ..."""
    return int(f"{val:064b}"[::-1], 2) / (1 << 64)


def _ordered_halving_windows(num_frames, opts, step):
    n, size, overlap = num_frames, opts.length, opts.overlap
    if n <= size:
        return [list(range(n))]
    stride = min(opts.stride, int(math.ceil(math.log2(n / size))) + 1)
    windows = []
    for level in range(stride):
        step_size = 1 << level
        pad = int(round(n * ordered_halving(step)))
        end = n + pad + (0 if opts.loops else -overlap)
        for j in range(int(ordered_halving(step) * step_size) + pad, end, size * step_size - overlap):
            windows.append([e % n for e in range(j, j + size * step_size, step_size)])
    return windows


def schedule_static(num_frames, opts, step=0, steps=1):
    n, size = num_frames, opts.length
    if n <= size:
        return [list(range(n))]
    hop = size - opts.overlap
    starts = list(range(0, n - size, hop)) + [n - size]
    return [list(range(s, s + size)) for s in starts]


def schedule_uniform(num_frames, opts, step=0, steps=1):
    return _ordered_halving_windows(num_frames, opts, step)


def schedule_looped(num_frames, opts, step=0, steps=1):
    return _ordered_halving_windows(num_frames, opts, 0)


SCHEDULES = {
    "static": schedule_static,
    "uniform": schedule_uniform,
    "looped": schedule_looped,
    "moore": schedule_looped,
}


def fuse_flat(length, window, num_frames, opts):
    return torch.ones(length)


def fuse_pyramid(length, window, num_frames, opts):
    i = torch.arange(length, dtype=torch.float32)
    return torch.minimum(i + 1, length - i)


def fuse_overlap_linear(length, window, num_frames, opts):
    w = torch.ones(length)
    ramp = opts.overlap
    if ramp == 0 or length >= num_frames:
        return w
    steps = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
    if window[0] != 0:
        w[:ramp] = steps
    if window[-1] != num_frames - 1:
        w[-ramp:] = steps.flip(0)
    return w


FUSE = {
    "flat": fuse_flat,
    "pyramid": fuse_pyramid,
    "overlap-linear": fuse_overlap_linear,
}


def get_schedule(name):
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown context schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}") from None


def get_fuse(name):
    try:
        return FUSE[name]
    except KeyError:
        raise ValueError(f"unknown fuse method {name!r}; valid methods: {', '.join(FUSE)}") from None


def windows(num_frames, opts, step=0, steps=1):
    return get_schedule(opts.schedule)(num_frames, opts, step, steps)


def window_weights(window, num_frames, opts):
    return get_fuse(opts.fuse)(len(window), window, num_frames, opts)


def count_unet_passes(num_frames, opts, steps, guidance=True):
    """How many window evaluations a run makes (each a UNet pass of ``length`` frames)."""
    per_step = [len(windows(num_frames, opts, s, steps)) for s in range(steps)]
    return sum(per_step) * (2 if guidance else 1)


def freenoise(noise, opts, generator):
    """FreeNoise: frames after the first window reuse the previous window's noise, shuffled."""
    n, size = noise.shape[0], opts.length
    if n <= size:
        return noise
    noise = noise.clone()
    hop = size - opts.overlap
    for start in range(size, n, hop):
        count = min(hop, n - start)
        perm = torch.randperm(size, generator=generator)[:count]
        noise[start:start + count] = noise[start - size:start][perm]
    return noise
