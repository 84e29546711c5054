"""The package as ComfyUI and Python users meet it: importing does no work, the library never
pulls in ComfyUI, and the registry/Manager metadata is consistent."""

import json
import os
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code):
    """Run ``code`` in a fresh interpreter (this process may already hold comfy or torch) and
    return what it printed as JSON."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout)


def test_importing_the_package_root_does_no_work():
    loaded = _python("import sys, json, poseanimate; "
                     "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
                     "('torch', 'numpy', 'cv2', 'onnxruntime', 'comfy', 'folder_paths') or m.startswith('poseanimate.'))))")
    assert loaded == []


def test_library_leaves_comfy_out():
    loaded = _python("import sys, json, poseanimate; "
                     "from poseanimate.models import loading, unet, attention, motion_module, pose_guider; "
                     "from poseanimate.sampling import engine, context, schedulers; "
                     "from poseanimate.pose import dwpose, keypoints, render, retarget, smooth, standin; "
                     "poseanimate.load_models; poseanimate.animate; "
                     "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
                     "('comfy', 'comfy_api', 'comfy_execution', 'folder_paths', 'nodes', 'latent_preview'))))")
    assert loaded == []


def test_comfyui_entry_points():
    source = open(os.path.join(ROOT, "__init__.py")).read()
    assert 'WEB_DIRECTORY = "./web"' in source and "async def comfy_entrypoint" in source
    assert "NODE_CLASS_MAPPINGS" not in source  # ComfyUI would ignore comfy_entrypoint


def test_registry_metadata():
    project = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "PoseAnimate" and comfy["Icon"].startswith("https://")
    assert comfy["Icon"].endswith("/docs/icon.png") and os.path.isfile(os.path.join(ROOT, "docs", "icon.png"))
    assert set(comfy["includes"]) == {"web", "example_workflows"}
    assert project["project"]["license"] == "Apache-2.0"
    assert "Apache License" in open(os.path.join(ROOT, "LICENSE")).read(200)
    requirements = [line.split(";")[0].strip() for line in open(os.path.join(ROOT, "requirements.txt"))
                    if line.strip() and not line.startswith("#")]
    assert not [r for r in requirements if r.split(">")[0].split("=")[0].strip().lower().startswith("torch")]
    names = {r.split(">")[0].split("=")[0].strip() for r in requirements}
    declared = {d.split(";")[0].split(">")[0].split("=")[0].strip() for d in project["project"]["dependencies"]}
    assert names == declared - {"torch"}


def test_example_workflows_are_ui_format_with_our_nodes():
    folder = os.path.join(ROOT, "example_workflows")
    styles = {"animate_anyone.json": "moore", "musepose.json": "musepose", "unianimate.json": "unianimate"}
    assert sorted(os.listdir(folder)) == sorted(styles)
    for name in os.listdir(folder):
        workflow = json.load(open(os.path.join(folder, name)))
        types = {n["type"] for n in workflow["nodes"]}
        vae = "CheckpointLoaderSimple" if name == "unianimate.json" else "VAELoader"  # UniAnimate: the SD2.1 file
        assert {"LoadImage", "ImageScale", "LoadVideo", "GetVideoComponents", vae, "VAEEncode",
                "CLIPVisionLoader", "CLIPVisionEncode", "CreateVideo", "SaveVideo"} <= types
        assert {t for t in types if t.startswith("PoseAnimate")} == {
            "PoseAnimateLoadModels", "PoseAnimatePoseExtract", "PoseAnimatePoseRetarget", "PoseAnimatePoseRender",
            "PoseAnimatePoseGuiderEncode", "PoseAnimateReferenceEncode", "PoseAnimateContextWindows",
            "PoseAnimateSampler", "PoseAnimateVAEDecode"}
        renders = [n["widgets_values"][2] for n in workflow["nodes"] if n["type"] == "PoseAnimatePoseRender"]
        assert renders and set(renders) == {styles[name]}
        crop = next(n for n in workflow["nodes"] if n["type"] == "CLIPVisionEncode")["widgets_values"]
        assert crop == ["none"]
        ids = {n["id"] for n in workflow["nodes"]}
        assert all(link[1] in ids and link[3] in ids for link in workflow["links"])
