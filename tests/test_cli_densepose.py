"""The command line's DensePose path (cli.pipeline.driving_densepose): a driving video through the stand-in
TorchScript in the download layout (MODELS/densepose), folders of ready-made renders, and its errors."""

import os

import numpy as np
import pytest
from PIL import Image

from densepose_standin import write_densepose
from poseanimate.cli import download as dl
from poseanimate.cli import pipeline
from poseanimate.cli.video import VideoReader, VideoWriter
from poseanimate.pose import densepose as dp
from tiny_models import person_frames


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    os.makedirs(root / dl.DENSEPOSE_DIR)
    write_densepose(root / dl.DENSEPOSE_DIR / dp.MODEL_FILE)
    return root


def write_video(path, frames, fps=12):
    with VideoWriter(path, frames.shape[2], frames.shape[1], fps) as writer:
        writer.write(frames)
    return path


def dense(kind, driving, root, **kwargs):
    args = dict(max_frames=None, fps=None, device="cpu", progress=False) | kwargs
    return pipeline.driving_densepose(kind, str(driving), str(root), 64, 96, **args)


def test_video(root, tmp_path):
    video = write_video(tmp_path / "driving.mp4", person_frames(5, 80, 120))
    images, fps = dense(pipeline.driving_kind(str(video)), video, root, max_frames=4)
    assert images.shape == (4, 96, 64, 3) and images.dtype == np.uint8 and fps == 12
    with VideoReader(str(video), 4) as reader:
        decoded = list(reader)
    model = dp.DensePose.from_file(root / dl.DENSEPOSE_DIR / dp.MODEL_FILE)
    np.testing.assert_array_equal(images, model.extract(decoded, 64, 96))
    assert dp.palette_share(images) == 1.0 and not (images == dp.part_colors()[0]).all()
    assert dense("video", video, root, fps=30.0)[1] == 30.0


def test_folder_of_renders_used_as_they_are(root, tmp_path):
    renders = dp.colorize(np.tile(np.arange(25, dtype=np.uint8).repeat(4)[None, :96, None], (2, 1, 64)))
    for i, image in enumerate(renders):
        Image.fromarray(image).save(tmp_path / f"frame_{i}.png")
    images, fps = dense("images", tmp_path, root)
    np.testing.assert_array_equal(images, renders)
    assert fps == pipeline.POSE_FPS


def test_errors(root, tmp_path):
    with pytest.raises(pipeline.JobError, match=r"--driving .*poses.json: these networks are driven by DensePose"):
        dense("json", tmp_path / "poses.json", root)
    empty = write_video(tmp_path / "empty.mp4", np.full((3, 120, 80, 3), 40, np.uint8))
    with pytest.raises(pipeline.JobError, match=r"DensePose found no person in any of its 3 frames"):
        dense("video", empty, root)
    with pytest.raises(FileNotFoundError, match=r"'densepose_r50_fpn_dl.torchscript' not found in .*densepose\. "
                                                r"Download it from https://huggingface.co/LayerNorm/"):
        dense("video", empty, tmp_path)


def test_densepose_networks_need_their_variant(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cli_fixtures as fx
    from poseanimate.models import loading

    fx.write_models(tmp_path / "models")
    fx.write_character(tmp_path / "character.png")
    (tmp_path / "poses").mkdir()
    Image.fromarray(np.zeros((128, 64, 3), np.uint8)).save(tmp_path / "poses" / "0.png")
    monkeypatch.setattr(loading, "load_models", lambda *a, **k: SimpleNamespace(family="magicanimate"))
    with pytest.raises(pipeline.JobError, match=r"animate_anyone/moore holds magicanimate networks, not moore; "
                                                r"use --variant magicanimate"):
        pipeline.animate_video(str(tmp_path / "character.png"), str(tmp_path / "poses"), str(tmp_path / "out.mp4"),
                               models=str(tmp_path / "models"), variant="moore", width=64, height=128,
                               device="cpu", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["character.png", "models", "poses"]
