"""Encoding time, size and quality of the command line's H.264 writer (cli/video.py), with x264 kept off AVX-512
(what the writer does) and with x264's own choice of instruction sets, and whether repeated encodes of the same
frames give the same file.

    python benchmarks/video.py                        # 48 frames at 512x768 and at 576x768
    python benchmarks/video.py --frames 96 --sizes 512x768 720x1280 --repeats 5

The frames are assets/character.png moved and zoomed a little each frame. PSNR is of the decoded RGB frames
against the frames given. Where x264 finds no AVX-512 on the CPU both rows run the same encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import av
import numpy as np
from PIL import Image

from poseanimate.cli import video

ASSET = Path(__file__).resolve().parents[1] / "assets" / "character.png"


def frames(count: int, width: int, height: int) -> np.ndarray:
    image = Image.open(ASSET).convert("RGB")
    out = []
    for i in range(count):
        zoom = 1.0 + 0.004 * i
        size = (int(width * zoom) + 1, int(height * zoom) + 1)
        big = np.asarray(image.resize(size, Image.BICUBIC))
        left, top = (size[0] - width) // 2 + (i % 7) - 3, (size[1] - height) // 2
        out.append(big[max(top, 0):max(top, 0) + height, max(left, 0):max(left, 0) + width])
    return np.stack(out)


def encode(path: Path, clip: np.ndarray) -> float:
    start = time.perf_counter()
    with video.VideoWriter(path, clip.shape[2], clip.shape[1], 24) as writer:
        writer.write(clip)
    return time.perf_counter() - start


def psnr(path: Path, clip: np.ndarray) -> float:
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    mse = np.mean((decoded.astype(np.float64) - clip) ** 2)
    return float(10 * np.log10(255 ** 2 / mse))


def run(clip: np.ndarray, repeats: int, folder: Path, name: str) -> dict:
    times, digests = [], set()
    for i in range(repeats):
        path = folder / f"{name}{i}.mp4"
        times.append(encode(path, clip))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return dict(seconds=round(statistics.median(times), 3), best=round(min(times), 3), bytes=path.stat().st_size,
                psnr=round(psnr(path, clip), 3), same_file_every_time=len(digests) == 1, digest=sorted(digests)[0][:12])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--sizes", nargs="+", default=["512x768", "576x768"], help="WIDTHxHEIGHT")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(dict(codec=video.pick_codec(), x264_asm=video.x264_instruction_sets(),
                          av=av.__version__, libavcodec=av.library_versions["libavcodec"])))
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            width, height = map(int, size.split("x"))
            clip = frames(args.frames, width, height)
            encode(Path(folder) / "warmup.mp4", clip[:4])
            rows = {"writer (no AVX-512)": run(clip, args.repeats, Path(folder), "fixed")}
            with mock.patch.object(video, "x264_instruction_sets", lambda: None):
                rows["x264's own choice"] = run(clip, args.repeats, Path(folder), "auto")
            for name, row in rows.items():
                print(json.dumps(dict(size=size, frames=args.frames, encoder=name, **row)))


if __name__ == "__main__":
    main()
