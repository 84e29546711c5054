"""Throughput of the pose stack: DWPose extraction, rendering (both styles), retargeting, smoothing,
DensePose control images.

    python benchmarks/pose.py                                  # stand-in ONNX / TorchScript models, CPU
    python benchmarks/pose.py --detector /models/yolox_l.onnx --pose-model /models/dw-ll_ucoco_384.onnx
    python benchmarks/pose.py --skip extract render retarget --densepose /models/densepose_r50_fpn_dl.torchscript \
        --densepose-device cuda

The frames are synthetic (noise, outlined boxes and bright dots that the stand-ins detect),
so the real detector may find nobody in them; the "pose model" line runs the pose model on
fixed boxes, so it measures the real pose model whatever the detector finds. ``--providers``
picks onnxruntime's providers (``auto``: CUDA when it works, else CPU). The DensePose stand-in
(tests/densepose_standin.py) measures the frame handling and rendering around the network; the
network's own time needs the real file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from poseanimate.pose import densepose, dwpose, render, retarget, smooth, standin
from poseanimate.pose.keypoints import from_pose_keypoint

TESTS = Path(__file__).resolve().parents[1] / "tests"
FIXTURE = TESTS / "data" / "render" / "full_512x768.json"


def _timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def synthetic_frames(count: int, width: int, height: int, people: int, seed: int = 0) -> np.ndarray:
    """Frames with ``people`` outlined boxes and a bright blob each (what the stand-ins detect)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (count, height, width, 3), dtype=np.uint8)
    box_w, box_h = width // (people * 2 + 1), int(height * 0.6)
    for frame in frames:
        for p in range(people):
            left, top = (2 * p + 1) * box_w, int(height * 0.2)
            outline = (200, 0, 0) if p % 2 == 0 else (0, 200, 0)
            cv2.rectangle(frame, (left, top), (left + box_w, top + box_h), outline, 2)
            cv2.circle(frame, (left + box_w // 2, top + box_h // 3), 3, (140, 255, 255), -1)
    return frames


def build_standins(folder: Path, people: int) -> tuple[str, str]:
    channels = [standin.ChannelBox(2 if p % 2 == 0 else 1) for p in range(min(people, 2))]
    return (standin.build_detector(folder / "yolox_l.onnx", channels),
            standin.build_pose_model(folder / "dw-ll_ucoco_384.onnx", "blob"))


def bench_extraction(args) -> None:
    providers = None if args.providers == "auto" else (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.providers == "cuda" else ["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        if args.detector and args.pose_model:
            detector_path, pose_path, kind = args.detector, args.pose_model, "released models"
        else:
            detector_path, pose_path = build_standins(Path(tmp), args.people)
            kind = "stand-in models"
        model = dwpose.DWPose(detector_path, pose_path, providers=providers)
        session_providers = model.pose_model.session.get_providers()
        frames = synthetic_frames(args.frames, args.width, args.height, args.people)
        model.extract(frames[:2], people="all")

        det_time = _timed(lambda: [model.detector(f) for f in frames], 1) / len(frames)
        boxes = np.array([[args.width * (0.1 + 0.3 * i), args.height * 0.1,
                           args.width * (0.35 + 0.3 * i), args.height * 0.9] for i in range(args.people)])
        pose_time = _timed(lambda: [model.pose_model(f, boxes) for f in frames], 1) / len(frames)
        total = _timed(lambda: model.extract(frames, people="all"), 1) / len(frames)
        found = sum(len(f.people) for f in model.extract(frames[:4], people="all")) / 4

    print(f"extraction ({kind}, {session_providers[0]}, {args.width}x{args.height}, "
          f"{args.people} people drawn, {found:.1f} found per frame, pose batch "
          f"{'dynamic' if model.pose_model.dynamic_batch else model.pose_model.batch_size}):")
    print(f"  detector only          {1 / det_time:8.1f} frames/s  ({det_time * 1e3:.2f} ms)")
    print(f"  pose model, {args.people} boxes    {1 / pose_time:8.1f} frames/s  ({pose_time * 1e3:.2f} ms)")
    print(f"  full extract           {1 / total:8.1f} frames/s  ({total * 1e3:.2f} ms)")


def bench_rendering(args) -> None:
    frame = from_pose_keypoint(json.loads(FIXTURE.read_text()))[0]
    print(f"rendering (full body + hands + face, {args.render_frames} frames):")
    for style in render.style_names():
        for width, height in ((512, 768), (576, 1024)):
            seconds = _timed(lambda: render.render_frame(frame, width, height, style), args.render_frames)
            print(f"  {style:9s} {width}x{height}  {1 / seconds:8.1f} frames/s  ({seconds * 1e3:.2f} ms)")


def bench_retarget_and_smooth(args) -> None:
    base = from_pose_keypoint(json.loads(FIXTURE.read_text()))[0]
    rng = np.random.default_rng(1)
    sequence = [base.people[0].map_xy(lambda xy: xy + rng.normal(0, 2, xy.shape)) for _ in range(args.sequence)]
    frames = [type(base)([p], base.width, base.height) for p in sequence]
    character = base.scaled_to(700, 1000)
    seconds = _timed(lambda: retarget.retarget(frames, character), 3)
    print(f"retarget {args.sequence} frames      {args.sequence / seconds:8.1f} frames/s")
    for method in smooth.SMOOTHERS:
        seconds = _timed(lambda: smooth.smooth_frames(frames, method), 3)
        print(f"smooth ({method:8s}) {args.sequence} frames {args.sequence / seconds:8.1f} frames/s")


def bench_densepose(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.densepose:
            path, kind = args.densepose, "released model"
        else:
            sys.path.insert(0, str(TESTS))
            from densepose_standin import write_densepose

            path, kind = write_densepose(Path(tmp) / densepose.MODEL_FILE, channels=(0, 1)), "stand-in model"
        model = densepose.DensePose.from_file(path, args.densepose_device)
        frames = synthetic_frames(args.densepose_frames, args.width, args.height, args.people)
        model.extract(frames[:2], args.densepose_size, args.densepose_size, resolution=args.densepose_resolution)
        seconds = _timed(lambda: model.extract(frames, args.densepose_size, args.densepose_size,
                                               resolution=args.densepose_resolution), 1) / len(frames)
        (boxes, *_), _ = model.predict(frames[0], args.densepose_resolution)
    print(f"densepose ({kind}, {args.densepose_device}, {args.width}x{args.height} -> {args.densepose_size}x"
          f"{args.densepose_size}, detection short side {args.densepose_resolution}, {len(boxes)} found per frame):")
    print(f"  extract + render       {1 / seconds:8.1f} frames/s  ({seconds * 1e3:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", help="path to yolox_l.onnx (default: a stand-in)")
    parser.add_argument("--pose-model", help="path to dw-ll_ucoco_384.onnx (default: a stand-in)")
    parser.add_argument("--providers", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--frames", type=int, default=48, help="frames to extract")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--people", type=int, default=1, help="people per synthetic frame (boxes for the pose model)")
    parser.add_argument("--render-frames", type=int, default=100)
    parser.add_argument("--sequence", type=int, default=240, help="frames for retargeting/smoothing")
    parser.add_argument("--densepose", help="path to densepose_r50_fpn_dl.torchscript (default: a stand-in)")
    parser.add_argument("--densepose-device", default="cpu", help="torch device for DensePose (default: cpu)")
    parser.add_argument("--densepose-frames", type=int, default=24)
    parser.add_argument("--densepose-size", type=int, default=512, help="control image width and height")
    parser.add_argument("--densepose-resolution", type=int, default=densepose.DETECT_RESOLUTION,
                        help="short side the DensePose model sees")
    parser.add_argument("--skip", nargs="*", default=(), choices=("extract", "render", "retarget", "densepose"))
    args = parser.parse_args()
    if "extract" not in args.skip:
        bench_extraction(args)
    if "render" not in args.skip:
        bench_rendering(args)
    if "retarget" not in args.skip:
        bench_retarget_and_smooth(args)
    if "densepose" not in args.skip:
        bench_densepose(args)


if __name__ == "__main__":
    main()
