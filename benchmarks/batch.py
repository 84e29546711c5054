"""Throughput of ``poseanimate batch`` and the speedup of window-parallel sampling, on a local Ray.

    python benchmarks/batch.py                 # both parts, CPU
    python benchmarks/batch.py --part batch    # jobs per minute with 1 and 2 CPU workers, tiny networks
    python benchmarks/batch.py --part windows  # one clip's windows on 1 and 2 workers, a mid-size network

Batch: N identical jobs (the test suite's tiny models in the download layout: DWPose stand-ins,
a tiny VAE and CLIP encoder, the parity fixture's networks; 8 frames, 64x128, 4 steps), run once
with 1 worker and once with 2; jobs per minute from the first job's start to the last one's end
(worker start-up and model loading included, Ray's own start-up not).

Windows: the engine on networks of block width --width (default 128 in every block, against
SD1.5's 320-1280) with random weights, 20 frames at 256x256 in windows of 8 (4 windows a step),
with guidance; seconds per step in one process (all CPUs' threads) and with 2 workers (half the
CPUs each, started and loaded before timing), and the largest difference between the two results.
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


def windows_speedup(width, frames, steps, size, threads):
    import torch
    from tiny_models import write_animate_folder

    import poseanimate
    from poseanimate.sampling.parallel import WindowWorkers

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_animate_folder(os.path.join(tmp, "nets"), width=width, cross_attention_dim=width)
        torch.set_num_threads(threads)
        models = poseanimate.load_models(folder, device="cpu", dtype=torch.float32)
        g = torch.Generator().manual_seed(0)
        w, h = size
        inputs = dict(reference_latents=torch.randn(1, 4, h // 8, w // 8, generator=g),
                      image_embeds=torch.randn(1, width, generator=g),
                      pose_images=torch.rand(frames, h, w, 3, generator=g), seed=1, steps=steps, cfg=3.5,
                      context=dict(length=8, overlap=4))
        start = time.perf_counter()
        single = poseanimate.animate(models, **inputs)
        single_s = time.perf_counter() - start
        with WindowWorkers(folder, workers=2, device="cpu", dtype=torch.float32) as pool:
            pool.animate(models, **dict(inputs, steps=1))  # the workers start and load the networks
            start = time.perf_counter()
            parallel = pool.animate(models, **inputs)
            parallel_s = time.perf_counter() - start
        diff = (parallel - single).abs().max().item()
    print(f"windows, UNet width {width}, {frames} frames at {w}x{h}, 4 windows a step, cfg 3.5: "
          f"1 process ({threads} threads) {single_s / steps:.2f} s/step, 2 workers {parallel_s / steps:.2f} s/step, "
          f"speedup {single_s / parallel_s:.2f}x, max |difference| {diff:.1e}")


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
        windows_speedup(a.width, 20, a.steps, (256, 256), a.cpus)
    ray.shutdown()


if __name__ == "__main__":
    main()
