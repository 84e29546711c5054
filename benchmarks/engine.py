"""Speed and memory of the animation engine: seconds per denoising step and peak memory.

    python benchmarks/engine.py                                  # the parity fixture's tiny networks, CPU
    python benchmarks/engine.py --full --device cuda --dtype fp16   # SD1.5 widths, random weights,
                                                                 # 24 frames at 512x768 with guidance

``--full`` builds the real topology (block widths 320/640/1280/1280, cross-attention 768, PoseGuider
16/32/96/256 -> 320) with random weights: the arithmetic of a released checkpoint, without the
download. Peak memory is the CUDA allocator's peak on a GPU and the process's peak resident size
on the CPU (which includes the Python interpreter and the weights).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import poseanimate  # noqa: E402
from poseanimate.models.loading import DTYPES, AnimateModels  # noqa: E402
from poseanimate.models.pose_guider import PoseGuider  # noqa: E402
from poseanimate.models.unet import UNet, UNetConfig  # noqa: E402
from poseanimate.sampling.context import ContextOptions, count_unet_passes  # noqa: E402
from poseanimate.sampling.animate_anyone import encode_poses, encode_reference, sample  # noqa: E402
from poseanimate.sampling.engine import make_noise  # noqa: E402

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "parity", "moore-tiny")


def full_size_models(device, dtype):
    torch.manual_seed(0)
    kw = dict(device=device, dtype=dtype)
    reference = UNet(UNetConfig(has_output=False), **kw)
    unet = UNet(UNetConfig(motion_modules=True), **kw)
    guider = PoseGuider(**kw)
    models = [m.eval().requires_grad_(False) for m in (reference, unet, guider)]
    return AnimateModels(*models, variant="moore", trained_length=24)


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="SD1.5-sized networks with random weights")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="default: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--frames", type=int, default=None, help="default: 24 (full) / 12 (tiny)")
    p.add_argument("--width", type=int, default=None, help="default: 512 (full) / 128 (tiny)")
    p.add_argument("--height", type=int, default=None, help="default: 768 (full) / 256 (tiny)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--cfg", type=float, default=3.5)
    p.add_argument("--length", type=int, default=None, help="context length (default: 24 full / 8 tiny)")
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--window-batch", type=int, default=1)
    p.add_argument("--schedule", default="static")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    a = p.parse_args(argv)

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype] if a.dtype else (torch.float32 if device.type == "cpu" else torch.float16)
    frames = a.frames or (24 if a.full else 12)
    width, height = a.width or (512 if a.full else 128), a.height or (768 if a.full else 256)
    length = a.length or (24 if a.full else 8)

    t0 = time.perf_counter()
    models = full_size_models(device, dtype) if a.full else poseanimate.load_models(TINY, device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    embed = models.embed_dim
    g = torch.Generator().manual_seed(0)
    ref_latents = torch.randn(1, 4, height // 8, width // 8, generator=g) * 0.8
    embeds = torch.randn(1, embed, generator=g)
    poses = torch.rand(frames, height, width, 3, generator=g)
    opts = ContextOptions(length=length, overlap=a.overlap, schedule=a.schedule, fuse="pyramid",
                          window_batch=a.window_batch)
    noise = make_noise((frames, 4, height // 8, width // 8), 0, "cpu", opts)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    reference = encode_reference(models.reference_net, ref_latents, embeds)
    sync()
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pose = encode_poses(models.pose_guider, poses)
    sync()
    pose_s = time.perf_counter() - t0

    stamps = []

    def on_event(event):
        if event["event"] == "step":
            sync()
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    sample(models.denoising_unet, reference=reference, pose_features=pose, noise=noise, steps=a.steps, cfg=a.cfg,
           context=opts, callback=on_event, trained_length=models.trained_length)
    total = time.perf_counter() - t0
    per_step = [b - a_ for a_, b in zip([t0] + stamps[:-1], stamps)]
    steady = per_step[1:] or per_step
    passes = count_unet_passes(frames, opts, a.steps, guidance=a.cfg > 1) // a.steps

    name = "full-size SD1.5 (random weights)" if a.full else "parity fixture tiny networks"
    print(f"engine benchmark: {name}, {device.type} {str(dtype).replace('torch.', '')}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if device.type == "cuda":
        print(f"  device: {torch.cuda.get_device_name(device)}")
    print(f"  video: {frames} frames at {width}x{height}, context {length}/{a.overlap} {a.schedule}, "
          f"window_batch {a.window_batch}, cfg {a.cfg}, {a.steps} steps")
    print(f"  UNet window passes per step: {passes} ({length} frames each)")
    print(f"  load/build: {load_s:.2f} s   ReferenceNet: {ref_s:.3f} s   PoseGuider: {pose_s:.3f} s")
    print(f"  seconds per step: first {per_step[0]:.3f}, then mean {sum(steady) / len(steady):.3f} "
          f"(min {min(steady):.3f}); sampling total {total:.2f} s")
    print(f"  peak memory: {peak_memory(device) / 2**30:.2f} GiB "
          f"({'CUDA allocator peak' if device.type == 'cuda' else 'process peak RSS'})")


if __name__ == "__main__":
    main()
