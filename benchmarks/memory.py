"""Peak memory of the whole command-line job against the video's length.

    python benchmarks/memory.py                      # 50, 200 and 1000 frames at 512x768, CPU
    python benchmarks/memory.py --frames 50 200 --steps 2

Each case is one `poseanimate animate` job (POSE_KEYPOINT driving, --retarget off, cheap MusePose-layout
networks written here, the test suite's tiny VAE and CLIP encoder, 1 step, cfg 1, 24-frame windows)
run by `poseanimate.cli.main` in
a fresh Python process, which reports its peak resident set size (ru_maxrss: the interpreter, the
libraries and the weights included). What grows with the video is the per-frame slope between the
shortest and the longest case; with tiny networks it is what the job keeps per frame (pose images,
pose features, latents, the sampler's state), not the networks' activations.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
TESTS = os.path.join(ROOT, "tests")
POSE = os.path.join(TESTS, "data", "render", "full_512x768.json")


def _driving(path, frames):
    """``frames`` frames of the render fixture's dancer, drifting a little each frame."""
    (first,) = json.load(open(POSE))[:1]
    out = []
    for i in range(frames):
        dx = 20 * ((i % 40) / 40 - 0.5)
        people = [{k: [v + dx if j % 3 == 0 and v > 0 else v for j, v in enumerate(values)] if values else values
                   for k, values in person.items()} for person in first["people"]]
        out.append({**first, "people": people})
    with open(path, "w") as f:
        json.dump(out, f)


def _write_networks(folder, width=32, embed_dim=32):
    """MusePose-layout networks (motion modules inside the denoising UNet) with random weights, 32
    wide, one layer per block, spatial attention only at 1/32 scale, a PoseGuider with a quarter of
    the real widths: 1000 frames at 512x768 in minutes on two CPU cores. What the job keeps per
    frame does not depend on these widths except the PoseGuider features' (here 32 channels; 320
    in the released networks)."""
    import torch

    from poseanimate.models.pose_guider import PoseGuider
    from poseanimate.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    os.makedirs(folder)
    config = dict(block_out_channels=(width,) * 4, cross_attention_dim=embed_dim, layers_per_block=1,
                  attention_blocks=(False, False, True, False))
    torch.save(UNet(UNetConfig(**config, has_output=False)).state_dict(), os.path.join(folder, "reference_unet.pth"))
    torch.save(UNet(UNetConfig(**config, motion_modules=True)).state_dict(), os.path.join(folder, "denoising_unet.pth"))
    torch.save(PoseGuider((8, 16, 32, 64), out_channels=width).state_dict(), os.path.join(folder, "pose_guider.pth"))


def _setup(folder):
    sys.path[:0] = [TESTS, ROOT]
    from cli_fixtures import write_character, write_image_encoder, write_vae

    models = os.path.join(folder, "models")
    _write_networks(os.path.join(models, "animate_anyone", "musepose"))
    write_vae(os.path.join(models, "vae", "sd-vae-ft-mse"))
    write_image_encoder(os.path.join(models, "clip_vision", "sd-image-variations-image-encoder"))
    write_character(os.path.join(folder, "character.png"))


def _child(argv):
    """One job in this process; prints its peak RSS (bytes) and seconds as JSON."""
    sys.path.insert(0, os.path.dirname(ROOT))
    import torch

    from poseanimate.cli import main

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    start = time.perf_counter()
    code = main(argv)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss": rss, "seconds": time.perf_counter() - start, "code": code}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per job")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        return _child(a.child)

    with tempfile.TemporaryDirectory() as tmp:
        _setup(tmp)
        rows = []
        for frames in a.frames:
            driving = os.path.join(tmp, f"driving_{frames}.json")
            _driving(driving, frames)
            job = ["animate", "--character", os.path.join(tmp, "character.png"), "--driving", driving,
                   "-o", os.path.join(tmp, f"out_{frames}.mp4"), "--models", os.path.join(tmp, "models"),
                   "--variant", "musepose", "--width", str(a.width), "--height", str(a.height), "--retarget", "off",
                   "--context-length", "24", "--context-overlap", "4",
                   "--steps", str(a.steps), "--cfg", "1", "--device", "cpu", "--dtype", "fp32", "-q"]
            env = {**os.environ, "BENCH_THREADS": str(a.threads)}
            run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *job], env=env,
                                 capture_output=True, text=True)
            if run.returncode != 0 or not run.stdout.strip():
                sys.exit(f"the {frames}-frame job failed:\n{run.stderr[-3000:]}")
            result = json.loads(run.stdout.strip().splitlines()[-1])
            if result["code"]:
                sys.exit(f"the {frames}-frame job exited {result['code']}:\n{run.stderr[-3000:]}")
            rows.append((frames, result["rss"], result["seconds"]))
            print(f"  {frames:5d} frames: peak RSS {result['rss'] / 2**20:8.0f} MiB   ({result['seconds']:.0f} s)",
                  flush=True)
    print(f"memory benchmark: the command line's animate job, {a.width}x{a.height}, tiny networks, CPU fp32, "
          f"{a.steps} step(s), {a.threads} threads")
    (f0, m0, _), (f1, m1, _) = rows[0], rows[-1]
    if f1 > f0:
        slope = (m1 - m0) / (f1 - f0)
        print(f"  per-frame slope ({f0} -> {f1} frames): {slope / 2**20:.2f} MiB/frame "
              f"(one {a.width}x{a.height} RGB uint8 pose image is {a.width * a.height * 3 / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
