"""A real ComfyUI (COMFYUI_PATH, started with --cpu in a temporary base directory) with this
repository installed as a custom node runs each example workflow, converted from its saved UI form
to an API prompt through /object_info, on tiny models, and writes a video.

ComfyUI runs with COMFYUI_PYTHON, else COMFYUI_PATH/venv/bin/python, else this interpreter; that
environment needs ComfyUI's requirements and this pack's requirements.txt.
"""

import glob
import json
import os
import asyncio
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import densepose_standin
import tiny_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))
WIDTH, HEIGHT, FRAMES, FPS = 64, 96, 6, 8
EMPTY = (2, 3)  # the frames of partly_empty.mp4 without a person
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# What the test changes in the saved workflows: a small video, few steps, more than one window.
OVERRIDES = {
    "ImageScale": {"width": WIDTH, "height": HEIGHT},
    "PoseAnimatePoseRender": {"width": WIDTH, "height": HEIGHT},
    "PoseAnimateDensePoseExtract": {"width": WIDTH, "height": HEIGHT},
    "PoseAnimateContextWindows": {"length": 4, "overlap": 2},
    "PoseAnimateSampler": {"steps": 2},
    "PoseAnimateVAEDecode": {"chunk": 4},
}
# ComfyUI builds the SD2.1 checkpoint (UNet, VAE, OpenCLIP-H text) and the OpenCLIP ViT-H image encoder at
# their fixed full sizes (about 5 GB), so for unianimate.json the test loads SD1.5-sized stand-ins instead: the
# VAE, a CLIP-L text encoder and the ViT-L image encoder (768-wide outputs), with a tiny UniAnimate UNet of
# context width 768. The UniAnimate nodes and the rest of the graph run as saved.
UNIANIMATE_TEXT = "clip-l-standin.safetensors"


def standins_for_sd21(prompt):
    """Replace the CheckpointLoaderSimple (CLIP output 1, VAE output 2) by VAELoader + CLIPLoader."""
    for key, node in list(prompt.items()):
        if node["class_type"] == "CheckpointLoaderSimple":
            prompt[key] = {"class_type": "VAELoader",
                           "inputs": {"vae_name": "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"}}
            prompt[key + "0"] = {"class_type": "CLIPLoader",
                                 "inputs": {"clip_name": UNIANIMATE_TEXT, "type": "stable_diffusion"}}
            for other in prompt.values():
                for name, value in other["inputs"].items():
                    if isinstance(value, list) and value[0] == key:
                        other["inputs"][name] = [key + "0", 0] if value[1] == 1 else [key, 0]
        elif node["class_type"] == "CLIPVisionLoader":
            node["inputs"]["clip_name"] = "sd-image-variations-image-encoder/pytorch_model.bin"
    return prompt


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


def _write_video(path, frames):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _inputs(folder):
    os.makedirs(folder)
    character = tiny_models.person_frames(1, 80, 128, box=(0.25, 0.05, 0.5, 0.9), sway=0)[0]
    cv2.imwrite(os.path.join(folder, "character.png"), cv2.cvtColor(character, cv2.COLOR_RGB2BGR))
    people = tiny_models.person_frames(FRAMES, WIDTH, HEIGHT)
    nobody = np.random.default_rng(1).integers(0, 50, people.shape, dtype=np.uint8)
    _write_video(os.path.join(folder, "driving.mp4"), people)
    _write_video(os.path.join(folder, "nobody.mp4"), nobody)
    _write_video(os.path.join(folder, "partly_empty.mp4"), [nobody[i] if i in EMPTY else f for i, f in enumerate(people)])


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
    tiny_models.write_magicanimate_folder(os.path.join(models, "animate_anyone", "magicanimate"), unet="ldm")
    tiny_models.write_clip_text_l(os.path.join(models, "text_encoders", "stable-diffusion-v1-5", "model.safetensors"))
    densepose_standin.write_densepose(os.path.join(models, "densepose", "densepose_r50_fpn_dl.torchscript"))
    tiny_models.write_unianimate(os.path.join(models, "animate_anyone", "unianimate",
                                              "unianimate_16f_32f_non_ema_223000.pth"), context_dim=768)
    tiny_models.write_clip_text_l(os.path.join(models, "text_encoders", UNIANIMATE_TEXT))
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
def test_example_workflow_lists_the_inputs_the_nodes_have(server, workflow):
    """A workflow saved before a node gained an input opens with that node grown over its neighbours and
    the new widget at its default: every saved node lists the inputs the server's node has now, and a
    widget value for each widget input."""
    for node in json.load(open(workflow))["nodes"]:
        spec = server.object_info.get(node["type"])
        if spec is None:
            continue
        inputs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        saved = [entry["name"] for entry in node.get("inputs", [])]
        where = f"{os.path.basename(workflow)}: {node['type']} (id {node['id']})"
        assert sorted(saved) == sorted(inputs), f"{where} lists inputs {saved}, the node has {sorted(inputs)}"
        widgets = sum(1 + bool(len(v) > 1 and v[1].get("control_after_generate")) for v in inputs.values()
                      if isinstance(v[0], list) or v[0] in WIDGET_TYPES)
        assert len(node.get("widgets_values") or []) >= widgets, f"{where}: {node.get('widgets_values')}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=os.path.basename)
def test_example_workflow_makes_a_video(server, workflow):
    prompt = to_api(json.load(open(workflow)), server.object_info)
    if os.path.basename(workflow) == "unianimate.json":
        prompt = standins_for_sd21(prompt)
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


def _pose_prompt(video):
    """Load Video -> Get Video Components -> Pose Extract -> Pose Render -> Preview Image."""
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "PoseAnimatePoseExtract", "inputs": {"image": ["2", 0], "people": "best"}},
        "4": {"class_type": "PoseAnimatePoseRender", "inputs": {"pose": ["3", 0], "width": WIDTH, "height": HEIGHT,
                                                                "style": "moore", "body": True, "hands": True,
                                                                "face": "auto"}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


async def _watch(url, prompt, timeout=300):
    """Queue ``prompt`` as a page would (websocket first) and collect what the page is sent until it
    ends: ``(progress texts [(node, text)], json messages [(type, data)])``."""
    import aiohttp

    client_id = uuid.uuid4().hex
    texts, messages = [], []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url.replace('http://', 'ws://')}/ws?clientId={client_id}") as ws:
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
                prompt_id = (await response.json())["prompt_id"]
            deadline = time.time() + timeout
            while True:
                message = await ws.receive(timeout=max(1.0, deadline - time.time()))
                if message.type == aiohttp.WSMsgType.BINARY:
                    (event,) = struct.unpack(">I", message.data[:4])
                    if event == 3:  # protocol.BinaryEventTypes.TEXT: node id length, node id, text
                        (n,) = struct.unpack(">I", message.data[4:8])
                        texts.append((message.data[8:8 + n].decode(), message.data[8 + n:].decode()))
                elif message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    messages.append((data["type"], data.get("data")))
                    if data["type"] in ("execution_success", "execution_error", "execution_interrupted") \
                            and data["data"].get("prompt_id") == prompt_id:
                        break
                else:
                    raise AssertionError(f"the websocket closed: {message}")
    return texts, messages


def test_pose_extract_tells_the_page_about_frames_without_a_person(server):
    texts, messages = asyncio.run(_watch(server.url, _pose_prompt("partly_empty.mp4")))
    assert messages[-1][0] == "execution_success", messages[-1]
    assert ("3", f"DWPose found nobody in 2 of {FRAMES} frames (frames 2-3); those frames are drawn empty.") in texts
    texts, messages = asyncio.run(_watch(server.url, _pose_prompt("driving.mp4")))
    assert messages[-1][0] == "execution_success" and not [t for t in texts if t[0] == "3"], texts
    texts, messages = asyncio.run(_watch(server.url, _pose_prompt("nobody.mp4")))
    kind, error = messages[-1]
    assert kind == "execution_error" and error["node_id"] == "3", messages[-1]
    assert error["exception_message"].startswith(
        f"PoseAnimate Pose Extract (DWPose): input 'image': DWPose found no person in any of its {FRAMES} frames. Fix: ")
