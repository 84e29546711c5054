"""The Context Windows widget (web/js/context_windows.js) computes what sampling/context.py computes.

Every case of tests/data/context_windows_cases.json goes through both; windows and pass counts must be
equal, weights equal to float32 precision (the JS computes in float64)."""

import json
import os
import shutil
import subprocess

import pytest
import torch

from poseanimate.sampling.context import ContextOptions, count_unet_passes, window_weights, windows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "tests", "data", "context_windows_cases.json")
MODULE = os.path.join(ROOT, "web", "js", "context_windows.js")
RUNNER = os.path.join(ROOT, "tests", "js", "context_cases.mjs")

with open(CASES) as f:
    CASE_LIST = json.load(f)["cases"]


def case_id(case):
    o = case["options"]
    return (f"{case['frames']}f-L{o['length']}o{o['overlap']}s{o['stride']}-{o['schedule']}-{o['fuse']}"
            f"-loop{o['closed_loop']}-b{o['window_batch']}")


def node_or_skip():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the web extension's JavaScript cannot be run")
    return node


@pytest.fixture(scope="module")
def js_results():
    out = subprocess.run([node_or_skip(), RUNNER, MODULE, CASES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def frame_weights(frames, opts, wins):
    """Each frame's summed weight, updated the way WindowedDenoiser updates its divisor."""
    wsum = torch.zeros(frames)
    for window in wins:
        idx = torch.tensor(window)
        wsum[idx] = wsum[idx] + window_weights(window, frames, opts)
    return wsum


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(ROOT, "web", "js"))))
def test_web_files_parse(name):
    out = subprocess.run([node_or_skip(), "--check", os.path.join(ROOT, "web", "js", name)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_cases_cover_the_options():
    opts = [c["options"] for c in CASE_LIST]
    assert {o["schedule"] for o in opts} >= {"static", "uniform", "looped", "moore"}
    assert {o["fuse"] for o in opts} >= {"flat", "pyramid", "overlap-linear"}
    assert {o["stride"] for o in opts} >= {1, 2, 3}
    assert {o["closed_loop"] for o in opts} == {None, True, False}
    assert {c["frames"] for c in CASE_LIST} >= {1}
    assert any(o["overlap"] == 0 for o in opts)
    assert any(o["length"] > c["frames"] for c, o in zip(CASE_LIST, opts))
    assert max(c["steps"] for c in CASE_LIST) >= 10


@pytest.mark.parametrize("index", range(len(CASE_LIST)), ids=[case_id(c) for c in CASE_LIST])
def test_js_matches_python(js_results, index):
    case, got = CASE_LIST[index], js_results[index]
    frames, steps = case["frames"], case["steps"]
    try:
        opts = ContextOptions.from_dict(case["options"])
    except ValueError as e:
        assert got.get("error") == str(e)
        return
    assert "error" not in got, got.get("error")
    for step in range(steps):
        wins = windows(frames, opts, step, steps)
        js = got["steps"][step]
        assert js["windows"] == wins, f"step {step}"
        assert [len(w) for w in js["weights"]] == [len(w) for w in wins]
        torch.testing.assert_close(torch.tensor(sum(js["weights"], []), dtype=torch.float32),
                                   torch.cat([window_weights(w, frames, opts) for w in wins]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(torch.tensor(js["frame_weights"], dtype=torch.float32),
                                   frame_weights(frames, opts, wins), rtol=1e-6, atol=1e-6)
    assert got["passes"] == count_unet_passes(frames, opts, steps)
    assert got["passes_unguided"] == count_unet_passes(frames, opts, steps, guidance=False)
    calls = sum(-(-len(windows(frames, opts, s, steps)) // opts.window_batch) for s in range(steps))
    assert got["calls"] == calls
