"""`poseanimate download` against a local stand-in for the Hugging Face Hub, and offline."""

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

import cli_fixtures as fx
from poseanimate.cli import download as dl

SCRIPT = os.path.join(os.path.dirname(sys.executable), "poseanimate")


def hub_files(variant):
    """Distinct bytes for every file the variant needs, keyed as the Hub serves them."""
    files = {}
    for f in (f for group in dl.remotes(variant).values() for f in group):
        path = "/".join(p for p in (f.repo, f.subfolder, f.filename) if p)
        files[path] = f"{path} contents\n".encode() * 50
    return files


def run(args, cwd, endpoint):
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(cwd / "hf-home"))
    env.pop("POSEANIMATE_MODELS", None)
    return subprocess.run([SCRIPT, "download", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def hub():
    server = fx.FakeHub({**hub_files("moore"), **hub_files("musepose")})
    yield server
    server.close()


def test_download_places_every_file_in_the_layout_then_skips_them(hub, tmp_path):
    r = run(["--variant", "moore", "--dest", tmp_path / "models"], tmp_path, hub.endpoint)
    assert r.returncode == 0, r.stderr
    remotes = [f for group in dl.remotes("moore").values() for f in group]
    assert len(remotes) == 10 and len(hub.gets()) == 10
    for f in remotes:
        served = hub.files["/".join(p for p in (f.repo, f.subfolder, f.filename) if p)]
        assert (tmp_path / "models" / f.dest).read_bytes() == served
    assert sorted(os.listdir(tmp_path / "models")) == ["animate_anyone", "clip_vision", "dwpose", "vae"]
    assert sorted(os.listdir(tmp_path / "models/animate_anyone/moore")) == sorted(dl.NETWORK_FILES)
    assert "moore: all 10 files are in" in r.stdout

    requests = len(hub.requests)
    again = run(["--variant", "moore", "--dest", tmp_path / "models"], tmp_path, hub.endpoint)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already there: ") == 10 and "(0 downloaded now)" in again.stdout
    assert len(hub.requests) == requests  # complete files are not even asked about


def test_download_into_comfyui_fetches_only_what_is_missing(hub, tmp_path):
    comfy = tmp_path / "ComfyUI"
    vae = comfy / "models/vae/sd-vae-ft-mse"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.bin").write_bytes(b"a VAE the user already had")
    r = run(["--variant", "musepose", "--comfyui", comfy], tmp_path, hub.endpoint)
    assert r.returncode == 0, r.stderr
    assert not [key for key in hub.gets() if "sd-vae-ft-mse" in key]
    assert sorted(k for k in hub.gets() if "MusePose" in k) == sorted(f"TMElyralab/MusePose/MusePose/{n}"
                                                                      for n in dl.NETWORK_FILES)
    for name in dl.NETWORK_FILES:
        assert (comfy / "models/animate_anyone/musepose" / name).read_bytes().startswith(b"TMElyralab/MusePose/MusePose/")
    assert (vae / "config.json").read_text() == "{}" and not (vae / "diffusion_pytorch_model.safetensors").exists()
    assert not (comfy / "models" / dl.STAGING).exists()


def test_offline_lists_every_url_and_folder(tmp_path):
    endpoint = fx.closed_port_endpoint()
    r = run(["--variant", "musepose", "--dest", tmp_path / "models"], tmp_path, endpoint)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("poseanimate download: error: cannot reach the Hugging Face Hub")
    for f in (f for group in dl.remotes("musepose").values() for f in group):
        assert f"{endpoint}/{f.repo}/resolve/main/{f.subfolder + '/' if f.subfolder else ''}{f.filename}" in r.stderr
        assert os.path.join(tmp_path, "models", os.path.dirname(f.dest)) + os.sep in r.stderr
    assert not (tmp_path / "models").exists()


def test_a_file_the_hub_does_not_have_is_named(hub, tmp_path):
    del hub.files["yzd-v/DWPose/yolox_l.onnx"]
    r = run(["--dest", tmp_path / "models"], tmp_path, hub.endpoint)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "yzd-v/DWPose/resolve/main/yolox_l.onnx failed" in r.stderr
    assert (tmp_path / "models/animate_anyone/moore/pose_guider.pth").exists()  # what came before stays


def test_models_folder_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEANIMATE_MODELS", str(tmp_path / "env"))
    assert dl.models_dir() == str(tmp_path / "env")
    assert dl.models_dir(models=str(tmp_path / "m")) == str(tmp_path / "m")
    assert dl.models_dir(comfyui=str(tmp_path)) == str(tmp_path / "models")
    monkeypatch.delenv("POSEANIMATE_MODELS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if sys.platform != "win32":
        assert dl.models_dir() == str(tmp_path / "cache/poseanimate/models")
    with pytest.raises(ValueError, match="no such folder"):
        dl.models_dir(comfyui=str(tmp_path / "nowhere"))


def test_weight_extensions_match_the_loader():
    from poseanimate.models.loading import WEIGHT_EXTENSIONS

    assert dl.WEIGHT_EXTENSIONS == WEIGHT_EXTENSIONS


@pytest.mark.parametrize("client", [c for c in dl.HTTP_CLIENTS if importlib.util.find_spec(c)] + ["os"])
def test_a_dropped_connection_is_a_download_error(client, tmp_path, monkeypatch):
    import huggingface_hub

    error = ConnectionResetError if client == "os" else importlib.import_module(client).RemoteProtocolError

    def dropped(*args, **kwargs):
        raise error("peer closed connection without sending complete message body")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", dropped)
    monkeypatch.setattr(dl, "reachable", lambda url: None)
    files = dl.remotes("moore", ["dwpose"])["dwpose"]
    with pytest.raises(dl.DownloadError, match="yolox_l.onnx failed: peer closed connection") as e:
        dl.download(str(tmp_path), files, log=lambda line: None)
    assert str(tmp_path / "dwpose") in str(e.value) and "dw-ll_ucoco_384.onnx" in str(e.value)


def download_variant(variant, tmp_path):
    """``poseanimate download --variant VARIANT`` into ``tmp_path/models`` from a fake Hub holding its files:
    the finished process and the Hub's files."""
    server = fx.FakeHub(hub_files(variant))
    try:
        return run(["--variant", variant, "--dest", tmp_path / "models"], tmp_path, server.endpoint), server.files
    finally:
        server.close()


def test_download_magicanimate_layout(tmp_path):
    r, files = download_variant("magicanimate", tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "models"
    assert sorted(os.listdir(root)) == ["animate_anyone", "densepose", "text_encoders", "vae"]
    assert sorted(os.listdir(root / "animate_anyone" / "magicanimate")) == [
        "appearance_encoder", "densepose_controlnet", "temporal_attention", "unet"]
    assert (root / "animate_anyone/magicanimate/temporal_attention/temporal_attention.ckpt").read_bytes() == \
        files["zcxu-eric/MagicAnimate/temporal_attention/temporal_attention.ckpt"]
    assert (root / "animate_anyone/magicanimate/unet/diffusion_pytorch_model.safetensors").is_file()
    encoder = root / "text_encoders" / "stable-diffusion-v1-5"
    assert sorted(os.listdir(encoder)) == ["config.json", "model.safetensors", "tokenizer"]
    assert len(os.listdir(encoder / "tokenizer")) == 4
    assert "magicanimate: all 16 files are in" in r.stdout


def test_unianimate_download_puts_each_file_where_its_loader_looks(tmp_path):
    r, _ = download_variant("unianimate", tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "models"
    for path in ("animate_anyone/unianimate/unianimate_16f_32f_non_ema_223000.pth",
                 "checkpoints/v2-1_512-ema-pruned.ckpt", "clip_vision/open_clip_pytorch_model.bin",
                 "dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx"):
        assert (root / path).read_bytes().startswith(b"ZheWang123/UniAnimate/" if "dwpose" not in path else b"yzd-v")
    assert "unianimate: all 5 files are in" in r.stdout
