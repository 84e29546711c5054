"""What the command line keeps per frame: pose images drawn (or read) into one uint8 array, handed
to the engine as they are (no float copy of the video). benchmarks/memory.py measures the job's
peak memory against the video's length."""

import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
import torch

import cli_fixtures as fx
from conftest import DATA, MOORE_TINY

WIDTH, HEIGHT = 64, 128


def _traced_peak(fn, *args, **kwargs):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn(*args, **kwargs)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _pose_frames(count):
    from poseanimate.pose.keypoints import from_pose_keypoint

    (frame,) = json.load(open(os.path.join(DATA, "render", "full_512x768.json")))
    return from_pose_keypoint([frame] * count)


def test_render_frames_draws_into_one_array():
    from poseanimate.pose.render import render_frame, render_frames

    frames = _pose_frames(40)
    render_frames(frames[:1], 128, 256, "moore")
    images, peak = _traced_peak(render_frames, frames, 128, 256, "moore")
    assert images.shape == (40, 256, 128, 3) and images.dtype == np.uint8
    assert np.array_equal(images[-1], render_frame(frames[-1], 128, 256, "moore"))
    # the video once, plus one frame's drawing (on the poses' 512x768 canvas) at a time; a list of
    # frames stacked at the end would hold the video twice
    assert peak < images.nbytes + 2 * 512 * 768 * 3 < 2 * images.nbytes, (peak, images.nbytes)
    assert render_frames([], WIDTH, HEIGHT, "musepose").shape == (0, HEIGHT, WIDTH, 3)


def test_pose_image_folder_is_read_into_one_array(tmp_path):
    from poseanimate.cli.pipeline import pose_images_from_folder

    for i in range(12):
        shutil.copy(os.path.join(MOORE_TINY, f"pose_{i:03d}.png"), tmp_path / f"frame{i}.png")
    pose_images_from_folder(str(tmp_path), 128, 256, max_frames=1)  # PIL's plugins load on first use
    images, peak = _traced_peak(pose_images_from_folder, str(tmp_path), 128, 256)
    assert images.shape == (12, 256, 128, 3) and images.dtype == np.uint8
    assert peak < images.nbytes + 4 * 256 * 128 * 3 < 2 * images.nbytes, (peak, images.nbytes)
    resized = pose_images_from_folder(str(tmp_path), 64, 128, max_frames=5)
    assert resized.shape == (5, 128, 64, 3)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-memory")
    fx.write_models(root / "models")
    fx.write_character(root / "character.png")
    from poseanimate.pose.keypoints import to_pose_keypoint

    (root / "poses.json").write_text(json.dumps(to_pose_keypoint(_pose_frames(6))))
    (root / "poses").mkdir()
    for i in range(5):
        shutil.copy(os.path.join(MOORE_TINY, f"pose_{i:03d}.png"), root / "poses" / f"{i}.png")
    return root


@pytest.mark.parametrize("driving, frames", [("poses.json", 6), ("poses", 5)])
def test_the_job_hands_the_engine_uint8_pose_images(work, monkeypatch, driving, frames):
    """The pose images reach the engine as the uint8 array the job drew or read, not a float copy."""
    from poseanimate.cli import pipeline
    from poseanimate.sampling import engine

    seen = {}
    drawn = []
    render = pipeline.render_frames
    monkeypatch.setattr(pipeline, "render_frames", lambda *a, **k: drawn.append(render(*a, **k)) or drawn[-1])
    read = pipeline.pose_images_from_folder
    monkeypatch.setattr(pipeline, "pose_images_from_folder", lambda *a, **k: drawn.append(read(*a, **k)) or drawn[-1])

    def fake_animate(models, *, pose_images, reference_latents, **kwargs):
        seen["poses"] = pose_images
        h, w = reference_latents.shape[-2:]
        return torch.zeros(pose_images.shape[0], 4, h, w)

    monkeypatch.setattr(engine, "animate", fake_animate)
    out = pipeline.animate_video(str(work / "character.png"), str(work / driving), str(work / f"{driving}.mp4"),
                                 models=str(work / "models"), width=WIDTH, height=HEIGHT, retarget="off", steps=1,
                                 device="cpu", dtype="fp32", progress=False)
    poses = seen["poses"]
    assert out["frames"] == frames and poses.dtype == torch.uint8 and poses.shape == (frames, HEIGHT, WIDTH, 3)
    (array,) = drawn
    assert poses.data_ptr() == array.ctypes.data  # the same memory: no copy of the video
