"""Window-parallel sampling on a local Ray (2 CPU workers, the parity fixture's networks) gives the
single-process engine's result."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import poseanimate
from conftest import MOORE_TINY, read_rgb

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    """The workers compute with one thread each (2 CPUs, 2 workers); the single-process reference does too, so
    the comparison is of the arithmetic, not of torch's thread count (1 vs 2 threads alone moves these latents by
    1.3e-5, and an H.264 encode can turn one level's difference in a frame into visible differences)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs():
    meta = json.load(open(os.path.join(MOORE_TINY, "meta.json")))
    tensors = load_file(os.path.join(MOORE_TINY, "tensors.safetensors"))
    poses = np.stack([read_rgb(os.path.join(MOORE_TINY, f"pose_{i:03d}.png")) for i in range(meta["frames"])])
    return dict(reference_latents=tensors["ref_latents"], image_embeds=tensors["clip_image_embeds"],
                pose_images=torch.from_numpy(poses), seed=5, steps=3)


CASES = {
    # 12 frames: 4 static windows a step (0-3, 3-6, 6-9, 8-11), guided, pyramid weights, 2 windows per worker call
    "guided-static": dict(cfg=3.5, context=dict(length=4, overlap=1, schedule="static", window_batch=2)),
    # windows that move every step and wrap around; no guidance; a sampler that adds noise
    "uniform-unguided": dict(cfg=1.0, scheduler={"sampler": "euler_ancestral"},
                             context=dict(length=6, overlap=2, schedule="uniform", fuse="flat")),
}


def test_window_parallel_equals_single_process(local_ray, tiny_models, inputs):
    from poseanimate.sampling.parallel import WindowWorkers

    windows = []
    with WindowWorkers(MOORE_TINY, workers=2, device="cpu", dtype=torch.float32) as pool:
        for name, case in CASES.items():
            single = poseanimate.animate(tiny_models, **inputs, **case)
            events = []
            parallel = pool.animate(tiny_models, **inputs, **case, callback=events.append)
            torch.testing.assert_close(parallel, single, atol=TOLERANCE, rtol=0, msg=name)
            assert [e["step"] for e in events if e["event"] == "window"] == [0, 1, 2], name
            windows.append(local_ray.get([w.windows_done.remote() for w in pool.workers]))
    # both workers evaluated windows in every case, and each case's windows were all evaluated
    for before, after in zip([[0, 0]] + windows, windows):
        assert all(a > b for a, b in zip(after, before))
    assert sum(windows[0]) == 4 * 3


def test_animate_command_with_workers_writes_the_single_process_video(local_ray, tmp_path, capsys):
    import cli_fixtures as fx
    from poseanimate.cli import main

    fx.write_models(tmp_path / "models")
    fx.write_character(tmp_path / "character.png")
    fx.write_video(tmp_path / "driving.mp4", fx.driving_frames(8), 12)
    common = ["animate", "--character", str(tmp_path / "character.png"), "--driving", str(tmp_path / "driving.mp4"),
              "--models", str(tmp_path / "models"), "--steps", "2", "--context-length", "4", "--context-overlap", "1",
              "--width", "64", "--height", "128", "--device", "cpu", "-q"]
    assert main([*common, "-o", str(tmp_path / "single.mp4")]) == 0
    assert main([*common, "-o", str(tmp_path / "parallel.mp4"), "--workers", "2"]) == 0
    single, _, _ = fx.read_video(tmp_path / "single.mp4")
    parallel, _, _ = fx.read_video(tmp_path / "parallel.mp4")
    assert single.shape == parallel.shape == (8, 128, 64, 3)
    np.testing.assert_array_equal(parallel, single)
    assert main([*common, "-o", str(tmp_path / "x.mp4"), "--ray", "auto"]) == 1
    assert "--ray auto is for window-parallel sampling: give --workers N too" in capsys.readouterr().err
