"""The command line never loses or damages a user's file, and answers bad input with one line
before any slow work (issue 9). Each case runs ``main`` in this process with a models folder that
does not exist: an error about anything else proves the check came before the models (and
before any download, pose detection or sampling)."""

import json
import math
import os
import signal
import stat

import numpy as np
import pytest
from PIL import Image

from poseanimate.cli import main

BODY = [100.0, 100.0, 1.0] * 18


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (48, 80), (200, 30, 30)).save(tmp_path / "character.png")
    (tmp_path / "driving.mp4").write_bytes(b"the user's driving video")
    (tmp_path / "poses.json").write_text(json.dumps([_frame()] * 3))
    return tmp_path


def _frame(people=None, **changes):
    frame = {"people": [{"pose_keypoints_2d": BODY}] if people is None else people,
             "canvas_width": 512, "canvas_height": 768}
    frame.update(changes)
    return frame


def animate(capsys, *args):
    """Run ``poseanimate animate`` with the test's defaults; returns (exit code, stderr's last line)."""
    base = {"--character": "character.png", "--driving": "poses.json", "-o": "out.mp4", "--models": "no-models"}
    flags = [a for a in args if a in ("-y", "--overwrite") or "=" in a]
    rest = [a for a in args if a not in flags]
    base.update(dict(zip(rest[::2], rest[1::2])))
    code = main(["animate", *[x for kv in base.items() for x in kv], *flags, "-q"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    return code, lines[-1] if lines else ""


def refused(capsys, *args):
    code, line = animate(capsys, *args)
    assert code == 1 and line.startswith("poseanimate animate: error: "), line
    assert "models missing" not in line, line
    return line


def _listing(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------- the user's files


def test_output_that_is_an_input_is_refused(work, capsys):
    before = _listing(work)
    line = refused(capsys, "--driving", "driving.mp4", "-o", "driving.mp4", "-y")
    assert "is the --driving input" in line
    os.symlink("driving.mp4", "link.mp4")
    line = refused(capsys, "--driving", "driving.mp4", "-o", "link.mp4", "-y")
    assert "is the --driving input" in line
    os.link("driving.mp4", "hard.mp4")
    line = refused(capsys, "--driving", f"{work}/./driving.mp4", "-o", "hard.mp4", "--overwrite")
    assert "is the --driving input" in line
    assert (work / "driving.mp4").read_bytes() == b"the user's driving video"
    assert _listing(work) == sorted(before + ["link.mp4", "hard.mp4"])


def test_existing_output_is_kept_unless_overwrite(work, capsys):
    (work / "out.mp4").write_bytes(b"last week's video")
    line = refused(capsys)
    assert "out.mp4 already exists; add --overwrite (-y)" in line
    os.symlink("nowhere.mp4", "dangling.mp4")
    assert "dangling.mp4 already exists" in refused(capsys, "-o", "dangling.mp4")
    code, line = animate(capsys, "-y")  # past the check: the next problem is the missing models
    assert code == 1 and "models missing" in line
    assert (work / "out.mp4").read_bytes() == b"last week's video"


def test_temporary_files_are_our_own(work, capsys):
    (work / ".out.partial.mp4").write_bytes(b"a file of the user's with the old fixed name")
    before = _listing(work)
    code, line = animate(capsys)
    assert code == 1 and "models missing" in line
    assert _listing(work) == before
    assert (work / ".out.partial.mp4").read_bytes() == b"a file of the user's with the old fixed name"

    from poseanimate.cli.pipeline import prepare_output

    first, second = prepare_output("out.mp4")[1], prepare_output("out.mp4")[1]
    assert first != second and os.path.isfile(first) and os.path.isfile(second)
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o666 & ~_umask()


def test_sighup_cleans_up_like_ctrl_c(work, capsys, monkeypatch):
    """SIGTERM during sampling is run for real in test_cli_animate.py; here SIGHUP (a closed terminal)."""
    from poseanimate.cli import pipeline

    def hang_up(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)

    monkeypatch.setattr(pipeline, "ensure_models", hang_up)
    previous = signal.getsignal(signal.SIGHUP)
    before = _listing(work)
    assert main(["animate", "--character", "character.png", "--driving", "poses.json", "-o", "out.mp4"]) == 128 + 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "poseanimate animate: stopped by SIGHUP"
    assert _listing(work) == before
    assert signal.getsignal(signal.SIGHUP) == previous


# ------------------------------------------------------------------------------------- options up front


@pytest.mark.parametrize("args, expected", [
    (["--cfg", "nan"], "--cfg nan is not a guidance scale"),
    (["--cfg", "inf"], "--cfg inf is not a guidance scale"),
    (["--cfg=-inf"], "--cfg -inf is not a guidance scale"),
    (["--fps", "inf"], "--fps inf is not a frame rate"),
    (["--fps", "nan"], "--fps nan is not a frame rate"),
    (["--fps", "0"], "--fps 0.0 is not a frame rate"),
    (["--seed", str(2 ** 64)], "--seed 18446744073709551616 is out of range"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    (["--context-length", "1"], "--context-overlap 4 (the default) must be less than --context-length 1; "
                                "give --context-overlap 0"),
    (["--context-length", "8", "--context-overlap", "8"], "--context-overlap 8 must be less than --context-length 8"),
    (["--context-overlap", "-1"], "--context-overlap -1 must be 0 or more"),
    (["--device", "nodevice"], "--device nodevice is not a device torch knows"),
])
def test_options_are_checked_before_slow_work(work, capsys, args, expected):
    assert expected in refused(capsys, *args)


def test_cuda_without_cuda_is_named_up_front(work, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = refused(capsys, "--device", "cuda")
    assert "--device cuda: torch sees no CUDA GPU here; use the CPU (--device cpu)" in line
    assert "--device cuda:1: torch sees no CUDA GPU" in refused(capsys, "--device", "cuda:1")


def test_huge_images_are_refused_in_one_line(work, capsys):
    Image.new("1", (14000, 14000)).save(work / "huge.png")
    line = refused(capsys, "--character", "huge.png")
    assert "--character huge.png is too large to open safely (196 million pixels" in line

    (work / "poses").mkdir()
    Image.new("RGB", (64, 64)).save(work / "poses" / "0000.png")
    Image.new("1", (15000, 12000)).save(work / "poses" / "0001.png")
    line = refused(capsys, "--driving", "poses")
    assert "pose image poses/0001.png is too large to open safely (180 million pixels" in line


def test_an_unreadable_driving_video_is_named_before_the_models(work, capsys):
    line = refused(capsys, "--driving", "driving.mp4")
    assert "--driving driving.mp4 could not be read as a video" in line


@pytest.mark.parametrize("frames, expected", [
    ([_frame(canvas_width=None)], "frame 0.canvas_width is None; it must be the width or height in pixels"),
    ([_frame(), _frame(canvas_height=math.inf)], "frame 1.canvas_height is inf"),
    ([_frame(people=[{"pose_keypoints_2d": [1e308, 5, 1] + BODY[3:]}])],
     "frame 0.people[0].pose_keypoints_2d has a point at (1e+308, 5), far outside the 512x768 canvas"),
    ([_frame(people=[{"pose_keypoints_2d": BODY[:3] + [-1e6, 5, 1] + BODY[6:]}])], "has a point at (-1e+06, 5)"),
    ([_frame(people=[])] * 3, "none of its 3 frames has a person with keypoints"),
    ([_frame(people=[{"pose_keypoints_2d": [0.0] * 54}]), _frame(people=[])],
     "none of its 2 frames has a person"),
    ([_frame(people=5)], "frame 0.people must be a list of people, got int"),
])
def test_bad_pose_keypoint_json_is_one_line(work, capsys, frames, expected):
    (work / "bad.json").write_text(json.dumps(frames))
    line = refused(capsys, "--driving", "bad.json", "--retarget", "off")
    assert "--driving bad.json" in line and expected in line


def test_some_empty_json_frames_are_a_warning(work, capsys, caplog):
    (work / "gaps.json").write_text(json.dumps([_frame(), _frame(people=[]), _frame()]))
    code = main(["animate", "--driving", "gaps.json", "--retarget", "off", "-o", "out.mp4", "--models", "no-models"])
    assert code == 1 and "models missing" in capsys.readouterr().err
    assert "1 of 3 frames of gaps.json have no person; those frames are drawn empty" in caplog.text


# ------------------------------------------------------------------------------------- the default inputs


def test_default_inputs_are_small_and_made_for_each_other():
    from poseanimate.cli import pipeline
    from poseanimate.pose.keypoints import from_pose_keypoint

    paths = (pipeline.DEFAULT_CHARACTER, pipeline.DEFAULT_CHARACTER_POSE, pipeline.DEFAULT_DRIVING)
    assert sum(os.path.getsize(p) for p in paths) < 300_000
    with Image.open(pipeline.DEFAULT_CHARACTER) as image:
        size = image.size
    (character,) = from_pose_keypoint(json.load(open(pipeline.DEFAULT_CHARACTER_POSE)))
    dance = from_pose_keypoint(json.load(open(pipeline.DEFAULT_DRIVING)))
    assert (character.width, character.height) == size and len(dance) >= 24
    assert all(len(f.people) == 1 and f.people[0].present("body").all() for f in [character, *dance])
    moves = np.abs(np.diff([f.people[0].body[:, :2] for f in dance], axis=0)).max()
    assert moves > 3  # it dances

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        assert 'poseanimate = ["assets/*.png", "assets/*.json"]' in f.read()  # shipped in the wheel
