"""`poseanimate animate` end to end (the installed console script, in a subprocess) on tiny models in the
download layout, and its answers to bad input."""

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

import cli_fixtures as fx
import tiny_models
from conftest import MOORE_TINY

SCRIPT = os.path.join(os.path.dirname(sys.executable), "poseanimate")
DRIVING_FPS = Fraction(25, 2)
SIZE = ["--width", "64", "--height", "128"]
FAST = ["--steps", "2", "--context-length", "8", "--context-overlap", "2", *SIZE]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    fx.write_models(root / "models")
    fx.write_character(root / "character.png")
    fx.write_video(root / "driving.mp4", fx.driving_frames(10), DRIVING_FPS)
    fx.write_video(root / "nobody.mp4", fx.driving_frames(4, person=False), 24)
    (root / "broken.mp4").write_bytes(b"this is not a video\n" * 10)
    (root / "folder.mp4").mkdir()
    tiny_models.write_unianimate(root / "ua" / "unianimate.pth")
    return root


def run(args, cwd, **env):
    # One torch thread: the tiny networks gain nothing from more, and a busy 2-core runner
    # slows down many times over when OpenMP threads compete.
    full_env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(cwd / "hf-home"), **env)
    full_env.pop("POSEANIMATE_MODELS", None)
    return subprocess.run([SCRIPT, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)


def check_video(path, frames, fps):
    video, rate, codec = fx.read_video(path)
    assert video.shape == (frames, 128, 64, 3)
    assert rate == fps and codec == "h264"
    assert video.std() > 1 and np.abs(np.diff(video.astype(float), axis=0)).mean() > 0.1


def test_video_driving_end_to_end(work):
    out = work / "out.mp4"
    r = run(["animate", "--character", "character.png", "--driving", "driving.mp4", "-o", out,
             "--models", "models", *FAST], work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "poses: 100%" in r.stderr and "denoising: 100%" in r.stderr and "Traceback" not in r.stderr
    check_video(out, 10, DRIVING_FPS)
    assert not [n for n in os.listdir(work) if "partial" in n]


def test_pose_keypoint_json_driving(work):
    from poseanimate.pose.dwpose import DWPose
    from poseanimate.pose.keypoints import to_pose_keypoint

    dwpose = DWPose(work / "models/dwpose/yolox_l.onnx", work / "models/dwpose/dw-ll_ucoco_384.onnx",
                    ["CPUExecutionProvider"])
    poses = dwpose.extract(fx.driving_frames(8))
    (work / "poses.json").write_text(json.dumps(to_pose_keypoint(poses)))
    out = work / "from_json.mp4"
    r = run(["animate", "--character", "character.png", "--driving", "poses.json", "-o", out, "--models", "models",
             "--frames", "6", "--fps", "8", "--smooth", "one_euro", "-q", *FAST], work)
    assert r.returncode == 0, r.stderr
    check_video(out, 6, 8)


def test_pose_image_folder_driving_downloads_what_is_missing(work):
    """Pose images are used as they are (no DWPose files needed); --download fetches the missing VAE."""
    models = work / "models-partial"
    shutil.copytree(work / "models", models, ignore=shutil.ignore_patterns("dwpose", "vae"))
    poses = work / "poses"
    poses.mkdir()
    for i in range(12):
        shutil.copy(os.path.join(MOORE_TINY, f"pose_{i:03d}.png"), poses / f"frame{i}.png")
    vae = work / "models/vae/sd-vae-ft-mse"
    hub = fx.FakeHub({f"stabilityai/sd-vae-ft-mse/{n}": (vae / n).read_bytes() for n in os.listdir(vae)})
    try:
        out = work / "from_images.mp4"
        r = run(["animate", "--character", "character.png", "--driving", "poses", "-o", out, "--models", models,
                 "--download", "-q", *FAST], work, HF_ENDPOINT=hub.endpoint)
    finally:
        hub.close()
    assert r.returncode == 0, r.stderr
    assert sorted(hub.gets()) == ["stabilityai/sd-vae-ft-mse/config.json",
                                  "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"]
    assert (models / "vae/sd-vae-ft-mse/config.json").read_bytes() == (vae / "config.json").read_bytes()
    assert not (models / "dwpose").exists() and not (models / ".downloads").exists()
    check_video(out, 12, 24)


def error_line(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("poseanimate animate: error: ")
    return last


@pytest.mark.parametrize("case, args, expected", [
    ("missing models", ["--models", "no-such-folder"],
     ["models missing in", "no-such-folder", "animate_anyone/moore", "poseanimate download --variant moore",
      "--download"]),
    ("unreadable video", ["--driving", "broken.mp4"], ["--driving", "broken.mp4", "could not be read as a video"]),
    ("video with no person", ["--driving", "nobody.mp4"], ["nobody.mp4", "no person in any of its 4 frames"]),
    ("output folder missing", ["-o", "no-such-folder/out.mp4"], ["no-such-folder", "does not exist"]),
    ("output is a folder", ["-o", "folder.mp4"], ["folder.mp4 is a folder; give a file name"]),
    ("output not a video name", ["-o", "out.txt"], ["must end in .mp4"]),
    ("output not writable", ["-o", "/proc/out.mp4"], ["/proc/out.mp4 cannot be written", "choose another"]),
    ("width not a multiple of 8", ["--width", "60"], ["--width 60 is not a positive multiple of 8; use 56 or 64"]),
    ("missing character", ["--character", "nobody.png"], ["--character nobody.png could not be read as an image"]),
    ("UniAnimate networks as moore", ["--networks", "ua"], ["holds unianimate networks, not moore",
                                                             "use --variant unianimate"]),
    ("negative pose temperature", ["--pose-temperature", "-1"],
     ["--pose-temperature must be 0 (off) or more (TCAN uses 3), got -1.0"]),
])
def test_bad_input_gets_one_clear_line(work, case, args, expected):
    if case == "output not writable" and not sys.platform.startswith("linux"):
        args = ["-o", os.path.join(str(work / "character.png"), "out.mp4")]
        expected = ["does not exist"]
    base = {"--character": "character.png", "--driving": "driving.mp4", "-o": "bad.mp4", "--models": "models"}
    base.update(dict(zip(args[::2], args[1::2])))
    r = run(["animate", *[x for kv in base.items() for x in kv], "-q", *FAST[:6]], work)
    line = error_line(r)
    for text in expected:
        assert text in line, line
    assert not [n for n in os.listdir(work) if n.startswith((".bad", "bad"))]


# ------------------------------------------------------------------------------------------ in-process parts


def test_reference_inputs_are_built_as_moore_builds_them():
    """CLIP: squashed to 224x224, then CLIPImageProcessor; VAE: diffusers' VaeImageProcessor at the video size."""
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image
    from transformers import CLIPImageProcessor

    from poseanimate.cli.generate import clip_pixels, vae_pixels

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 97, 3), dtype=np.uint8))
    expected = CLIPImageProcessor()(image.resize((224, 224)), return_tensors="pt").pixel_values
    torch.testing.assert_close(clip_pixels(image), expected, rtol=0, atol=1e-6)
    expected = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True).preprocess(image, height=128, width=64)
    torch.testing.assert_close(vae_pixels(image, 64, 128), expected, rtol=0, atol=1e-6)


def test_default_size_follows_the_character():
    from poseanimate.cli.pipeline import JobError, video_size

    assert video_size(None, None, 96, 160) == (512, 856)
    assert video_size(None, None, 1920, 1080) == (912, 512)
    assert video_size(576, None, 96, 160) == (576, 960)
    assert video_size(None, 768, 1000, 1000) == (768, 768)
    with pytest.raises(JobError, match="--height 770 is not a positive multiple of 8; use 768 or 776"):
        video_size(512, 770, 10, 10)


def test_help_is_fast_and_lists_what_the_library_offers():
    from poseanimate import cli
    from poseanimate.pose.smooth import SMOOTHERS
    from poseanimate.sampling.context import FUSE, SCHEDULES
    from poseanimate.sampling.schedulers import SAMPLERS, SchedulerConfig

    assert cli.SAMPLERS == tuple(SAMPLERS) and cli.SCHEDULES == tuple(SCHEDULES) and cli.FUSES == tuple(FUSE)
    assert cli.SMOOTHERS == tuple(SMOOTHERS)
    assert SchedulerConfig.__dataclass_fields__["beta_schedule"].default in cli.BETA_SCHEDULES
    code = "import sys; from poseanimate.cli import parser; parser().format_help(); print(sorted(" \
           "m for m in ('torch', 'diffusers', 'transformers', 'av', 'onnxruntime') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_codec_fallback():
    from poseanimate.cli.video import VideoError, pick_codec

    assert pick_codec() == "libx264"  # PyPI's av wheels carry it
    assert pick_codec({"mpeg4", "libvpx"}) == "mpeg4"
    with pytest.raises(VideoError, match="none of the encoders"):
        pick_codec(set())


def test_sigterm_while_sampling_removes_the_temporary_file(work):
    import signal
    import threading

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(work / "hf-home"))
    env.pop("POSEANIMATE_MODELS", None)
    before = sorted(os.listdir(work))
    proc = subprocess.Popen([SCRIPT, "animate", "--character", "character.png", "--driving", "driving.mp4",
                             "-o", "stopped.mp4", "--models", "models", *FAST[2:], "--steps", "500"],
                            cwd=work, env=env, stderr=subprocess.PIPE, text=True)
    seen, sampling = [], threading.Event()

    def read():
        for chunk in iter(lambda: proc.stderr.read(64), ""):
            seen.append(chunk)
            if "denoising" in "".join(seen[-3:]):
                sampling.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert sampling.wait(300), "".join(seen)
        assert [n for n in os.listdir(work) if n.startswith(".stopped.") and n.endswith(".partial.mp4")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        reader.join(10)
    err = "".join(seen)
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith("poseanimate animate: stopped by SIGTERM")
    assert sorted(os.listdir(work)) == before


def test_first_run_needs_no_files_of_the_users(work, tmp_path):
    """The README's first command: the project's figure and dance, nothing else; the models folder has
    no DWPose files (the figure's skeleton ships with it) and --download finds nothing to fetch."""
    models = tmp_path / "models"
    shutil.copytree(work / "models", models, ignore=shutil.ignore_patterns("dwpose"))
    r = run(["animate", "--download", "-o", "out.mp4", "--models", models, "--width", "64", "--height", "96",
             "--frames", "6", "--steps", "1", "--context-length", "6", "--context-overlap", "0"], tmp_path,
            HF_ENDPOINT=fx.closed_port_endpoint())
    assert r.returncode == 0, r.stderr
    assert "example figure" in r.stderr and "example dance" in r.stderr
    video, rate, _ = fx.read_video(tmp_path / "out.mp4")
    assert video.shape == (6, 96, 64, 3) and rate == 24 and video.std() > 1
    assert not (models / "dwpose").exists()
