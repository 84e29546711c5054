"""The package as ComfyUI and Python users meet it: importing does no work, the library never
pulls in ComfyUI, and the registry/Manager metadata is consistent."""

import json
import os
import subprocess
import sys
import tomllib

import pytest

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


EXAMPLES = os.path.join(ROOT, "example_workflows")
WORKFLOWS = ["animate_anyone.json", "magicanimate.json", "musepose.json", "unianimate.json"]


def test_each_example_workflow_has_a_template_thumbnail():
    """ComfyUI serves example_workflows/ at /api/workflow_templates/<pack folder>/ and lists its *.json
    (app/custom_node_manager.py); frontend 1.27 shows <workflow name>.jpg from there on the template
    card (mediaSubtype "jpg" for every custom-node template), a 256 px square that keeps the aspect."""
    from PIL import Image

    thumbnails = [name.removesuffix(".json") + ".jpg" for name in WORKFLOWS]
    assert sorted(os.listdir(EXAMPLES)) == sorted(WORKFLOWS + thumbnails)
    for name in thumbnails:
        path = os.path.join(EXAMPLES, name)
        assert os.path.getsize(path) <= 40_000, f"{name} is {os.path.getsize(path)} bytes: keep the repo small"
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB", f"{name} is {image.format} {image.mode}"
            assert 384 <= max(image.size) <= 640, f"{name} is {image.size}: make it about 512 px across"


def test_example_workflows_are_ui_format_with_our_nodes():
    common = {"LoadImage", "ImageScale", "LoadVideo", "GetVideoComponents", "VAEEncode", "CreateVideo", "SaveVideo"}
    ours = {"PoseAnimateLoadModels", "PoseAnimateReferenceEncode", "PoseAnimatePoseGuiderEncode",
            "PoseAnimateContextWindows", "PoseAnimateSampler", "PoseAnimateVAEDecode"}
    skeleton = {"PoseAnimatePoseExtract", "PoseAnimatePoseRetarget", "PoseAnimatePoseRender"}
    styles = {"animate_anyone.json": "moore", "musepose.json": "musepose", "unianimate.json": "unianimate"}
    for name in WORKFLOWS:
        workflow = json.load(open(os.path.join(EXAMPLES, name)))
        types = {n["type"] for n in workflow["nodes"]}
        nodes = {n["type"]: n for n in workflow["nodes"]}
        if name == "magicanimate.json":
            assert common | {"VAELoader", "CLIPLoader", "CLIPTextEncode"} <= types
            assert {t for t in types if t.startswith("PoseAnimate")} == ours | {"PoseAnimateDensePoseExtract"}
            assert nodes["CLIPTextEncode"]["widgets_values"] == [""]
            assert nodes["PoseAnimateLoadModels"]["widgets_values"][0] == "magicanimate"
            # MagicAnimate's settings: 25 steps, cfg 7.5; 16-frame windows overlapping by 4, looped, flat
            assert nodes["PoseAnimateSampler"]["widgets_values"][2:4] == [25, 7.5]
            assert nodes["PoseAnimateContextWindows"]["widgets_values"][:2] == [16, 4]
        else:
            vae = "CheckpointLoaderSimple" if name == "unianimate.json" else "VAELoader"  # UniAnimate: the SD2.1 file
            assert common | {vae, "CLIPVisionLoader", "CLIPVisionEncode"} <= types
            assert {t for t in types if t.startswith("PoseAnimate")} == ours | skeleton
            renders = [n["widgets_values"][2] for n in workflow["nodes"] if n["type"] == "PoseAnimatePoseRender"]
            assert renders and set(renders) == {styles[name]}
            assert nodes["CLIPVisionEncode"]["widgets_values"] == ["none"]
        ids = {n["id"] for n in workflow["nodes"]}
        assert all(link[1] in ids and link[3] in ids for link in workflow["links"])


# ComfyUI's frontend (1.27) draws no text below the zoom LiteGraph.Canvas.MinFontSizeForLOD (8 px) /
# NODE_TEXT_SIZE (14 px) = 0.57; 0.7 keeps titles at 10 px. In a 1600x1000 window its canvas starts
# right of the 64 px side bar and below the 78 px tab and menu bars (measured with tools/screenshot.py).
READABLE_ZOOM = 0.7
CANVAS = (64, 78, 1600, 1000)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflows_open_readable_with_every_node_in_view(name):
    workflow = json.load(open(os.path.join(ROOT, "example_workflows", name)))
    ds = workflow["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert scale >= READABLE_ZOOM, f"{name} opens at zoom {scale}: text is hard to read or not drawn"
    left, top, right, bottom = CANVAS
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        box = ((x + ox) * scale + left, (y - 30 + oy) * scale + top, (x + w + ox) * scale + left,
               (y + h + oy) * scale + top)
        assert left <= box[0] and top <= box[1] and box[2] <= right and box[3] <= bottom, \
            f"{name}: {node['type']} (id {node['id']}) is outside a 1600x1000 window at the saved view: {box}"


# Above a node's title bar the frontend draws the node's badges (our pack's "PoseAnimate" label, about 20 px).
BADGE = 20


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflows_nodes_do_not_overlap(name):
    workflow = json.load(open(os.path.join(ROOT, "example_workflows", name)))
    boxes = []
    for node in workflow["nodes"]:
        (x, y), (w, h) = node["pos"], node["size"]
        top = y - 30 - (BADGE if node["type"].startswith("PoseAnimate") else 0)
        boxes.append((node, (x, top, x + w, y + h)))
    for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(boxes):
        for b, (bx0, by0, bx1, by1) in boxes[i + 1:]:
            assert not (ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1), \
                f"{name}: {a['type']} (id {a['id']}) and {b['type']} (id {b['id']}) overlap"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflows_links_match_the_slots_and_name_the_registry_id(name):
    """The frontend checks each link against the slots it joins (a mismatch is 'repaired' with an error
    in the browser console); cnr_id is how the frontend and the Manager find the pack of a missing
    node: the registry id, which is the project name."""
    workflow = json.load(open(os.path.join(ROOT, "example_workflows", name)))
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id, f"{name}: link {link_id}'s target slot"
        assert nodes[target]["inputs"][target_slot]["type"] == kind, f"{name}: link {link_id}'s type"
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"], f"{name}: link {link_id}'s origin slot"
    linked = {e["link"] for n in workflow["nodes"] for e in n.get("inputs", []) if e.get("link") is not None}
    assert linked == {link[0] for link in workflow["links"]}
    registry_id = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]["name"]
    for node in workflow["nodes"]:
        if node["type"].startswith("PoseAnimate"):
            assert node["properties"]["cnr_id"] == registry_id, f"{name}: {node['type']} (id {node['id']})"
        else:
            assert node["properties"].get("cnr_id") in (None, "comfy-core"), f"{name}: {node['type']}"
