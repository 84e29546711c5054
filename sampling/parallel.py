"""Window-parallel sampling on Ray: one clip's context windows spread over N workers.

Each worker (a Ray actor) loads the networks once and, per video, builds the family's own window
model (the family module's ``build_window_model``) from the same inputs the caller gives
:func:`~poseanimate.sampling.engine.animate`. During sampling the caller's windowed denoiser
hands every window of a step to :class:`ParallelWindowModel` at once; it splits them into N
contiguous shares, sends each worker its share of the latents and gathers the predictions in
window order, so fusion and guidance are exactly the single-process engine's. Latents and the
video's inputs travel; weights do not.

    with WindowWorkers(networks_folder, workers=2) as pool:
        latents = pool.animate(models, reference_latents=..., image_embeds=..., pose_images=..., seed=1)

The only module of the library that imports ray (with cli/ray_workers.py).
"""

import logging
import os
from dataclasses import replace

import ray
import torch

from .engine import run_sampler
from .families import family_module

log = logging.getLogger(__name__)


class WindowWorker:
    """Holds the networks (loaded once) and the current video's window model."""

    def __init__(self, networks, device, dtype, threads=None):
        from ..models.loading import load_models

        if threads:
            torch.set_num_threads(threads)
        self.models = load_models(networks, device=device, dtype=dtype)
        self.model, self.windows = None, 0

    def pid(self):
        return os.getpid()

    def windows_done(self):
        return self.windows

    def prepare(self, inputs):
        """Build the family's window model for one video."""
        self.model = None
        self.model = family_module(self.models.family).build_window_model(self.models, **inputs)[0]
        return True

    @torch.inference_mode()
    def evaluate(self, x, t, windows, branches, batch):
        """The window model on ``windows`` (``batch`` windows per call), float32 on the CPU."""
        device = self.models.device
        x, t = x.to(device), t.to(device)
        out = [self.model(x[i:i + batch], t, windows[i:i + batch], branches) for i in range(0, len(windows), batch)]
        self.windows += len(windows)
        return torch.cat(out, dim=1).cpu()


class ParallelWindowModel:
    """A window model that evaluates its windows on the workers; ``batch`` windows per call on each."""

    def __init__(self, workers, batch):
        self.workers, self.batch = workers, batch

    def __call__(self, x, t, windows, branches):
        n = len(windows)
        k = min(len(self.workers), n)
        bounds = [round(i * n / k) for i in range(k + 1)]
        xs, ts = x.detach().cpu(), t.detach().cpu() if torch.is_tensor(t) else torch.as_tensor(t)
        refs = [w.evaluate.remote(xs[a:b], ts, [list(win) for win in windows[a:b]], tuple(branches), self.batch)
                for w, a, b in zip(self.workers, bounds, bounds[1:])]
        return torch.cat(ray.get(refs), dim=1).to(x.device)


class WindowWorkers:
    """N Ray actors that hold the networks in ``networks`` (a folder or role -> file dict, as
    ``load_models`` takes); ``device``/``dtype`` as ``load_models``' (GPU workers get one GPU each).
    Uses the Ray already initialised in this process, else ``ray.init(address)``."""

    def __init__(self, networks, *, workers=2, address=None, device=None, dtype=None):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        gpu = str(device).startswith("cuda") or (device in (None, "auto") and ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = None if gpu else max(1, cpus // workers)
        options = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": threads}
        device = "cuda" if gpu else "cpu"  # a GPU worker sees its own GPU as "cuda"
        actor = ray.remote(WindowWorker).options(**options)
        self.workers = [actor.remote(networks, device, dtype, threads) for _ in range(workers)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        if self.started:
            ray.shutdown()
            self.started = False

    def animate(self, models, **inputs):
        """:func:`~poseanimate.sampling.engine.animate` with the windows of every step evaluated on the
        workers; the same inputs, the same result."""
        shared = {k: v for k, v in inputs.items() if k != "callback"}
        ray.get([w.prepare.remote(shared) for w in self.workers])
        _, noise, run = family_module(models.family).build_window_model(models, **inputs)
        opts = run.pop("context")
        # every window of a step in one call; each worker takes the caller's window_batch at a time
        return run_sampler(ParallelWindowModel(self.workers, opts.window_batch), noise,
                           context=replace(opts, window_batch=1 << 30), **run)
