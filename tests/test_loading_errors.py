"""Model files that cannot be used are named in one line that says why (issue 9): a pickle that
holds code is not called a broken download, torch's advice to load it unsafely is never passed
on, messages do not end in '..'; and ``models.files`` lists only the files used."""

import logging
import os
import shutil

import pytest
import torch

import cli_fixtures as fx
import poseanimate
from conftest import MOORE_TINY
from poseanimate.models.loading import CheckpointError, read_state_dict

FILES = ("reference_unet", "denoising_unet", "motion_module", "pose_guider")


class Code:
    def __reduce__(self):
        return (os.getcwd, ())


def _clean(message):
    assert "\n" not in message and ".." not in message, message
    assert "weights_only" not in message and "trusted source" not in message, message


def _folder(path):
    path.mkdir(exist_ok=True)
    for name in FILES:
        shutil.copy(os.path.join(MOORE_TINY, f"{name}.pth"), path / f"{name}.pth")
    return path


def test_a_network_file_with_code_is_refused_as_such(tmp_path):
    folder = _folder(tmp_path / "moore")
    torch.save({"conv_in.weight": torch.zeros(1), "x": Code()}, folder / "pose_guider.pth")
    with pytest.raises(CheckpointError) as error:
        poseanimate.load_models(folder, device="cpu")
    message = str(error.value)
    _clean(message)
    assert "pose_guider.pth" in message and "pickle that holds code" in message and "getcwd" in message
    assert "truncated" not in message and "download it again" not in message


@pytest.mark.parametrize("name", ["denoising_unet.safetensors", "denoising_unet.pth"])
def test_a_damaged_network_file_is_called_a_broken_download(tmp_path, name):
    folder = _folder(tmp_path / "moore")
    os.remove(folder / "denoising_unet.pth")
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(read_state_dict(os.path.join(MOORE_TINY, "denoising_unet.pth")), folder / name)
    else:
        shutil.copy(os.path.join(MOORE_TINY, name), folder / name)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{name}.*damaged or incomplete.*download it again") as error:
        poseanimate.load_models(folder, device="cpu")
    _clean(str(error.value))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    fx.write_image_encoder(root / "clip")
    fx.write_vae(root / "vae")
    return root


@pytest.mark.parametrize("which, weights, pickle", [("clip", "model.safetensors", "pytorch_model.bin"),
                                                    ("vae", "diffusion_pytorch_model.safetensors",
                                                     "diffusion_pytorch_model.bin")])
def test_image_encoder_and_vae_with_code_or_damaged(encoders, tmp_path, which, weights, pickle):
    from poseanimate.cli.generate import load_image_encoder, load_vae
    from poseanimate.cli.pipeline import JobError

    load = {"clip": load_image_encoder, "vae": load_vae}[which]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(encoders / which / "config.json", pickled)
    torch.save({"x": Code()}, pickled / pickle)
    with pytest.raises(JobError, match="is a pickle that holds code") as error:
        load(str(pickled), torch.device("cpu"), torch.float32)
    _clean(str(error.value))
    damaged = tmp_path / "damaged"
    shutil.copytree(encoders / which, damaged)
    data = (damaged / weights).read_bytes()
    (damaged / weights).write_bytes(data[: len(data) // 2])
    with pytest.raises(JobError, match="damaged or incomplete.*download it again") as error:
        load(str(damaged), torch.device("cpu"), torch.float32)
    _clean(str(error.value))


def test_musepose_uses_its_own_motion_modules_and_says_so(tmp_path, caplog):
    from tiny_models import write_animate_folder

    folder = write_animate_folder(str(tmp_path / "musepose"), "musepose", width=32, cross_attention_dim=32,
                                  pose_channels=(4, 8, 8, 16))
    unet = torch.load(os.path.join(folder, "denoising_unet.pth"))
    inside = {k: v for k, v in unet.items() if ".motion_modules." in k}
    torch.save(inside, os.path.join(folder, "motion_module.pth"))  # as the MusePose release ships it
    with caplog.at_level(logging.INFO, logger="poseanimate"):
        models = poseanimate.load_models(folder, device="cpu")
    assert models.variant == "musepose" and "motion_module" not in models.files
    assert "motion_module.pth is not used" in caplog.text and "its own motion modules" in caplog.text
    caplog.clear()
    shutil.copy(os.path.join(MOORE_TINY, "motion_module.pth"), folder)  # a Moore file in a MusePose folder
    models = poseanimate.load_models(folder, device="cpu")
    assert set(models.files) == {"reference_unet", "denoising_unet", "pose_guider"}
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "motion_module.pth is not used" in warning[0].getMessage()
