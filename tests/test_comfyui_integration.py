"""A real ComfyUI (COMFYUI_PATH, started with --cpu in a temporary base directory) with this
repository installed as a custom node runs each example workflow, converted from its saved UI form
to an API prompt through /object_info, on tiny models, and writes a video.

ComfyUI runs with COMFYUI_PYTHON, else COMFYUI_PATH/venv/bin/python, else this interpreter; that
environment needs ComfyUI's requirements and this pack's requirements.txt.
"""

import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import cv2
import pytest

import tiny_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))
WIDTH, HEIGHT, FRAMES, FPS = 64, 96, 6, 8
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# What the test changes in the saved workflows: a small video, few steps, more than one window.
OVERRIDES = {
    "ImageScale": {"width": WIDTH, "height": HEIGHT},
    "PoseAnimatePoseRender": {"width": WIDTH, "height": HEIGHT},
    "PoseAnimateContextWindows": {"length": 4, "overlap": 2},
    "PoseAnimateSampler": {"steps": 2},
    "PoseAnimateVAEDecode": {"chunk": 4},
}


def to_api(workflow, object_info):
    """A workflow as the ComfyUI front end saves it -> the prompt /prompt takes. Widget values are
    matched to the node's widget inputs in /object_info's input order (a seed's
    control_after_generate value follows it); linked inputs take the link; nodes the server does
    not know (notes) and muted or bypassed nodes are left out."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        spec = object_info.get(node["type"])
        if spec is None or node.get("mode", 0) in (2, 4):
            continue
        inputs = {}
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                link = links[entry["link"]]
                inputs[entry["name"]] = [str(link[1]), link[2]]
        specs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        order = spec["input_order"].get("required", []) + spec["input_order"].get("optional", [])
        values = list(node.get("widgets_values") or [])
        for name in order:
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or not values:
                continue
            value = values.pop(0)
            if options.get("control_after_generate"):
                values.pop(0)
            inputs.setdefault(name, value)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url, data=None, timeout=60):
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{url}: HTTP {e.code}: {e.read().decode()[:4000]}") from None


def _python(comfy_path):
    venv = os.path.join(comfy_path, "venv", "bin", "python")
    return os.environ.get("COMFYUI_PYTHON") or (venv if os.path.isfile(venv) else sys.executable)


def _inputs(folder):
    os.makedirs(folder)
    character = tiny_models.person_frames(1, 80, 128, box=(0.25, 0.05, 0.5, 0.9), sway=0)[0]
    cv2.imwrite(os.path.join(folder, "character.png"), cv2.cvtColor(character, cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(os.path.join(folder, "driving.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                             (WIDTH, HEIGHT))
    for frame in tiny_models.person_frames(FRAMES, WIDTH, HEIGHT):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip("COMFYUI_PATH is not set: this test starts a real ComfyUI (not on PyPI) from that checkout")
    base = str(tmp_path_factory.mktemp("comfyui"))
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.symlink(ROOT, os.path.join(base, "custom_nodes", "ComfyUI-PoseAnimate"))
    models = os.path.join(base, "models")
    for variant in ("moore", "musepose"):
        tiny_models.write_animate_folder(os.path.join(models, "animate_anyone", variant), variant)
    tiny_models.write_dwpose(os.path.join(models, "dwpose"))
    tiny_models.write_sd_vae(os.path.join(models, "vae", "sd-vae-ft-mse", "diffusion_pytorch_model.safetensors"))
    tiny_models.write_clip_vision_vitl(os.path.join(models, "clip_vision", "sd-image-variations-image-encoder",
                                                    "pytorch_model.bin"))
    _inputs(os.path.join(base, "input"))
    port = _free_port()
    log_path = os.path.join(base, "comfyui.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([_python(comfy_path), "main.py", "--cpu", "--base-directory", base, "--listen",
                                 "127.0.0.1", "--port", str(port), "--disable-auto-launch", "--database-url",
                                 "sqlite:///:memory:"], cwd=comfy_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                object_info = _call(f"{url}/object_info")
                break
            except (urllib.error.URLError, ConnectionError, AssertionError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"ComfyUI did not start (exit {proc.poll()}):\n{open(log_path).read()[-4000:]}")
                time.sleep(2)
        yield SimpleNamespace(url=url, base=base, log=log_path, object_info=object_info)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_pack_loads_as_a_custom_node(server):
    ours = sorted(k for k in server.object_info if k.startswith("PoseAnimate"))
    assert len(ours) == 10, open(server.log).read()[-4000:]
    assert "ComfyUI-PoseAnimate" in open(server.log).read()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=os.path.basename)
def test_example_workflow_makes_a_video(server, workflow):
    prompt = to_api(json.load(open(workflow)), server.object_info)
    for node in prompt.values():
        node["inputs"].update(OVERRIDES.get(node["class_type"], {}))
    start = time.time()
    prompt_id = _call(f"{server.url}/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"]
    while True:
        history = _call(f"{server.url}/history/{prompt_id}").get(prompt_id)
        if history and history["status"].get("completed") is not None:
            break
        assert time.time() - start < 900, f"{os.path.basename(workflow)} did not finish in 15 minutes"
        time.sleep(2)
    errors = [m for m in history["status"].get("messages", []) if m[0] == "execution_error"]
    assert history["status"]["status_str"] == "success", json.dumps(errors)[:4000]
    (saved,) = [o["images"][0] for o in history["outputs"].values() if o.get("animated")]
    path = os.path.join(server.base, "output", saved["subfolder"], saved["filename"])
    video = cv2.VideoCapture(path)
    count, fps = int(video.get(cv2.CAP_PROP_FRAME_COUNT)), video.get(cv2.CAP_PROP_FPS)
    ok, frame = video.read()
    video.release()
    print(f"\n{os.path.basename(workflow)}: {len(prompt)} nodes queued, {time.time() - start:.1f} s -> "
          f"{os.path.relpath(path, server.base)} ({os.path.getsize(path)} bytes, {count} frames, "
          f"{frame.shape[1]}x{frame.shape[0]}, {fps:g} fps)")
    assert ok and (count, frame.shape[:2], round(fps)) == (FRAMES, (HEIGHT, WIDTH), FPS)
