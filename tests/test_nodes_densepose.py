"""PoseAnimate DensePose Extract in this process against the ComfyUI named by COMFYUI_PATH (skipped
without it), on the stand-in TorchScript of tests/densepose_standin.py."""

import asyncio

import numpy as np
import pytest
import torch

from densepose_standin import write_densepose
from tiny_models import person_frames

AUX = ("custom_nodes", "comfyui_controlnet_aux", "ckpts", "LayerNorm", "DensePose-TorchScript-with-hint-image")


@pytest.fixture(scope="module")
def node(comfy):
    from poseanimate.nodes import extension

    listed = asyncio.run(extension.PoseAnimateExtension().get_node_list())
    return {n.GET_SCHEMA().node_id: n for n in listed}["PoseAnimateDensePoseExtract"]


@pytest.fixture
def folders(node, tmp_path, monkeypatch):
    """Empty densepose / custom_nodes folders in place of the checkout's."""
    import folder_paths

    table = dict(folder_paths.folder_names_and_paths)
    for name in ("densepose", "custom_nodes"):
        (tmp_path / name).mkdir()
        table[name] = ([str(tmp_path / name)], table[name][1])
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", table)
    monkeypatch.delenv("AUX_ANNOTATOR_CKPTS_PATH", raising=False)
    yield tmp_path
    from poseanimate.pose.densepose import release_densepose

    release_densepose()


def run(node, **kwargs):
    args = dict(width=64, height=96, fit="pad", resolution=64, model="densepose_r50_fpn_dl.torchscript") | kwargs
    return node.execute(**args).result[0]


def frames(count=3):
    return torch.from_numpy(person_frames(count, 80, 120)).float() / 255


def test_schema(node):
    schema = node.GET_SCHEMA()
    assert schema.display_name == "PoseAnimate DensePose Extract" and schema.category == "PoseAnimate/pose"
    inputs = {i.id: i for i in schema.inputs}
    assert list(inputs) == ["image", "width", "height", "fit", "resolution", "model"]
    assert (inputs["fit"].options, inputs["fit"].default) == (["pad", "crop", "stretch"], "pad")
    assert (inputs["width"].default, inputs["height"].default, inputs["resolution"].default) == (512, 512, 512)
    assert inputs["model"].default == "densepose_r50_fpn_dl.torchscript"
    assert all(x.tooltip for x in schema.inputs + schema.outputs)
    assert [o.io_type for o in schema.outputs] == ["IMAGE"]


def test_extract_with_controlnet_aux_copy(node, folders, monkeypatch):
    from poseanimate.pose import densepose as dp

    with pytest.raises(ValueError, match=r"^PoseAnimate DensePose Extract: input 'model': DensePose model file "
                                         r"'densepose_r50_fpn_dl.torchscript' not found .* Fix: download https://"
                                         r"huggingface.co/LayerNorm/DensePose-TorchScript-with-hint-image/resolve/"
                                         r"main/densepose_r50_fpn_dl.torchscript into " + str(folders / "densepose")):
        run(node, image=frames())
    aux = folders.joinpath(*AUX)
    aux.mkdir(parents=True)
    path = write_densepose(aux / dp.MODEL_FILE)
    import comfy.utils

    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        updates.append((value, total)))
    out = run(node, image=frames())
    assert out.shape == (3, 96, 64, 3) and out.dtype == torch.float32 and updates[-1] == (3, 3)
    expected = dp.DensePose.from_file(path).extract(person_frames(3, 80, 120), 64, 96, "pad", 64)
    assert torch.equal((out * 255).round().to(torch.uint8), torch.from_numpy(expected))
    assert dp.palette_share(expected) == 1.0 and not (expected == dp.part_colors()[0]).all()


def test_models_folder_first_damaged_file_and_cancel(node, folders, monkeypatch):
    from poseanimate.pose import densepose as dp

    (folders / "densepose" / dp.MODEL_FILE).write_bytes(b"not a model")
    aux = folders.joinpath(*AUX)
    aux.mkdir(parents=True)
    write_densepose(aux / dp.MODEL_FILE)
    with pytest.raises(ValueError, match=r"DensePose Extract: input 'model': densepose_r50_fpn_dl.torchscript in "
                                         + str(folders / "densepose") + r" is not a TorchScript model .*Fix: replace"):
        run(node, image=frames())
    write_densepose(folders / "densepose" / dp.MODEL_FILE)
    with pytest.raises(ValueError, match=r"DensePose Extract: input 'image': expected RGB frames"):
        run(node, image=frames()[0])
    crop = (run(node, image=frames(1), width=96, height=96, fit="crop")[0] * 255).round().to(torch.uint8).numpy()
    body = (crop != dp.part_colors()[0]).any(-1)  # the person (x 24..56, y 18..108 of 80x120) x1.2, 24 rows cut
    assert crop.shape == (96, 96, 3) and body[0].any() and body[-1].any()
    assert not body[:, :28].any() and body[:, 30:66].all(0).any() and not body[:, 68:].any()
    import comfy.model_management as mm
    import comfy.utils

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda *a, **k: mm.interrupt_current_processing(True))
    with pytest.raises(mm.InterruptProcessingException):
        run(node, image=frames())
    assert not mm.processing_interrupted()
