"""Throughput of ``poseanimate batch`` and the speedup of window-parallel sampling, on a local Ray.

    python benchmarks/batch.py                 # both parts, CPU
    python benchmarks/batch.py --part batch    # jobs per minute with 1 and 2 CPU workers, tiny networks
    python benchmarks/batch.py --part windows  # one clip's windows on 1 and 2 workers, a mid-size network

Batch: N identical jobs (the test suite's tiny models in the download layout: DWPose stand-ins,
a tiny VAE and CLIP encoder, the parity fixture's networks; 8 frames, 64x128, 4 steps), run once
with 1 worker and once with 2; jobs per minute from the first job's start to the last one's end
(worker start-up and model loading included, Ray's own start-up not).

Windows: the engine on a UNet of block widths --width (default 128, about 1/10 of SD1.5's compute
per frame) with random weights, 4 windows per step, each worker computing its share of a step's
windows; seconds per step with 1 worker and with 2, and the largest difference of the latents
from the single-process engine's.
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def batch_throughput(jobs, frames, steps):
    import cli_fixtures as fx

    from poseanimate.cli import parser
    from poseanimate.cli.batch import plan, run_batch

    with tempfile.TemporaryDirectory() as tmp:
        fx.write_models(os.path.join(tmp, "models"))
        fx.write_character(os.path.join(tmp, "character.png"))
        fx.write_video(os.path.join(tmp, "driving.mp4"), fx.driving_frames(frames), 12)
        with open(os.path.join(tmp, "jobs.csv"), "w") as f:
            f.write("character,driving,seed,output\n")
            f.writelines(f"character.png,driving.mp4,{i},clip{i}.mp4\n" for i in range(jobs))
        results = {}
        for workers in (1, 2):
            out = os.path.join(tmp, f"out{workers}")
            args = parser().parse_args(["batch", os.path.join(tmp, "jobs.csv"), "-o", out, "--models",
                                        os.path.join(tmp, "models"), "--steps", str(steps), "--width", "64",
                                        "--height", "128", "--context-length", "4", "--context-overlap", "1",
                                        "--device", "cpu", "-q"])
            planned, manifest, outdir = plan(args)
            start = time.perf_counter()
            run_batch(planned, manifest, outdir, workers=workers, device="cpu")
            seconds = time.perf_counter() - start
            assert all(j.status == "done" for j in planned), [j.error for j in planned]
            per_job = sorted(j.record["seconds"] for j in planned)
            results[workers] = jobs / seconds * 60
            print(f"batch, {workers} CPU worker(s): {jobs} jobs in {seconds:.1f} s = {results[workers]:.1f} jobs/min "
                  f"(one job in a worker: median {per_job[len(per_job) // 2]:.2f} s; the first includes "
                  f"loading the models)", flush=True)
        print(f"batch speedup with 2 workers: {results[2] / results[1]:.2f}x")


def windows_speedup(width, frames, steps, size):
    import torch

    from parallel_cases import parallel_vs_single  # tests/parallel_cases.py

    single, parallel, diff = parallel_vs_single(width=width, frames=frames, steps=steps, size=size, workers=2)
    print(f"windows, width {width}, {frames} frames at {size[0]}x{size[1]}: 1 process {single / steps:.2f} s/step, "
          f"2 workers {parallel / steps:.2f} s/step, speedup {single / parallel:.2f}x, "
          f"max |difference| {diff:.2e}")
    del torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("batch", "windows", "both"), default="both")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--width", type=int, default=128, help="UNet block width for the windows part")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray may use")
    a = p.parse_args(argv)

    import ray

    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    print(f"local Ray, {a.cpus} CPUs; torch threads per worker: {max(1, a.cpus // 2)} with 2 workers")
    if a.part in ("batch", "both"):
        batch_throughput(a.jobs, a.frames, a.steps)
    if a.part in ("windows", "both"):
        windows_speedup(a.width, 16, a.steps, (256, 256))
    ray.shutdown()


if __name__ == "__main__":
    main()
