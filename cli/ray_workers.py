"""Ray actors for ``poseanimate batch``: one worker per GPU (or CPU slot) that loads the models once
and keeps them for every job it takes; jobs go to whichever worker is free; a job whose worker died
is tried again on another one, up to a limit. The only module besides sampling/parallel.py that
imports ray."""

import argparse
import logging
import os
import socket
import time
from collections import deque

import ray

log = logging.getLogger("poseanimate.batch")


class JobWorker:
    """Runs jobs one at a time in its own process; its ``cache`` keeps the loaded models."""

    def __init__(self, threads=None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.cache = {}

    def info(self):
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def run(self, args, tmp):
        """Animate one job into ``tmp`` and rename it to the job's output; returns the manifest record."""
        from . import USER_ERRORS, animate_options
        from .batch import sha256
        from .pipeline import animate_video

        args = argparse.Namespace(**args)
        start = time.perf_counter()
        record = {"status": "failed", "character": args.character, "driving": args.driving}
        try:
            options = {**animate_options(args), "progress": False}
            result = animate_video(args.character, args.driving, tmp, **options, cache=self.cache)
            record.update(status="done", sha256=sha256(tmp), frames=result["frames"], fps=result["fps"],
                          size=[result["width"], result["height"]], variant=result["variant"])
            os.replace(tmp, args.output)
        except USER_ERRORS as e:
            record["error"] = " ".join(str(e).split())
        except Exception as e:  # any other failure is this job's: recorded with its one line, the batch goes on
            log.exception("job %s failed", args.output)
            record["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record


def _resources(device, gpus_per_job, workers):
    """``(actor options, count, device for the jobs)`` from what the cluster has."""
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0), int(have.get("CPU", 1))
    use_gpu = str(device).startswith("cuda") or (device in (None, "auto") and gpus > 0)
    if use_gpu:
        if gpus < gpus_per_job:
            raise ValueError(f"--device {device}: the Ray cluster has {gpus:g} GPUs, fewer than --gpus-per-job "
                             f"{gpus_per_job:g}; use --device cpu or a cluster with GPUs")
        count = workers or max(1, int(gpus // gpus_per_job))
        return {"num_gpus": gpus_per_job, "num_cpus": 1}, count, "cuda" if device in (None, "auto") else device
    count = workers or max(1, cpus)
    threads = max(1, cpus // count)
    return {"num_cpus": threads}, count, "cpu"


class JobPool:
    """The workers of one batch; ``with JobPool(...) as pool: pool.run(jobs, ...)``."""

    def __init__(self, address, workers, device, gpus_per_job, retries):
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        self.options, self.count, self.device = _resources(device, gpus_per_job, workers)
        self.retries, self.actor = retries, ray.remote(JobWorker)
        self.workers, self.info = {}, {}  # index -> actor, index -> its info() (a ref until asked)
        self.created = self.replacements = 0
        for _ in range(self.count):
            self._start_worker()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for actor in self.workers.values():
            ray.kill(actor)
        self.workers.clear()
        if self.started:
            ray.shutdown()

    def _start_worker(self):
        index, self.created = self.created, self.created + 1
        threads = self.options.get("num_cpus") if "num_gpus" not in self.options else None
        self.workers[index] = self.actor.options(**self.options).remote(threads)
        self.info[index] = self.workers[index].info.remote()
        return index

    def worker_info(self, index):
        """``{"pid", "host"}`` of a worker (waits until it has started)."""
        if isinstance(self.info[index], ray.ObjectRef):
            self.info[index] = ray.get(self.info[index])
        return self.info[index]

    def run(self, jobs, tmp, finished, on_event, counts):
        """Run ``jobs``; ``finished(job, record)`` for each; ``on_event`` for starts and ends."""
        pending, running = deque(jobs), {}
        idle = deque(self.workers)

        def event(name, job, worker):
            counts["running"] = len(running)
            if on_event is not None:
                on_event({"event": name, "job": job, "worker": worker, "counts": dict(counts), "pool": self})

        try:
            while pending or running:
                while pending and idle:
                    worker, job = idle.popleft(), pending.popleft()
                    if worker not in self.workers:
                        pending.appendleft(job)
                        continue
                    job.attempts += 1
                    args = dict(vars(job.args), device=self.device)  # a GPU worker sees its GPU as "cuda"
                    args.pop("run", None)
                    part = os.path.join(tmp, f"{job.attempts}-{os.path.basename(job.output)}")
                    running[self.workers[worker].run.remote(args, part)] = (job, worker)
                    event("start", job, worker)
                if not running:  # every worker died and no more may be started
                    for job in pending:
                        finished(job, {"status": "failed", "error": "every worker died; see the Ray logs",
                                       "attempts": job.attempts, "row": job.where, "options": job.options})
                    break
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    job, worker = running.pop(ref)
                    try:
                        record = ray.get(ref)
                        idle.append(worker)
                    except ray.exceptions.RayActorError as e:
                        record = self._worker_died(job, worker, e, pending, idle)
                        if record is None:
                            continue
                    record["attempts"], record["worker"] = job.attempts, worker
                    record["row"] = job.where
                    record["options"] = job.options
                    finished(job, record)
                    event("end", job, worker)
        except KeyboardInterrupt:
            for ref, (job, worker) in running.items():
                ray.cancel(ref, force=False)
                job.status = "interrupted"
            raise

    def _worker_died(self, job, worker, error, pending, idle):
        """Drop the dead worker, start one in its place, and queue its job again unless it has used up
        its tries; returns the failure record when it has."""
        log.warning("worker %s died running %s (%s)", worker, job.output, type(error).__name__)
        self.workers.pop(worker, None)
        if self.replacements < self.retries * self.count:
            self.replacements += 1
            idle.append(self._start_worker())
        if not self.workers:
            return {"status": "failed", "error": "every worker died; see the Ray logs"}
        if job.attempts <= self.retries:
            pending.appendleft(job)
            return None
        return {"status": "failed",
                "error": f"its worker died {job.attempts} times ({type(error).__name__}); see the Ray logs"}
