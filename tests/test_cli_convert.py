"""`poseanimate convert`: fp32 pickles -> fp16 safetensors that the loader reads like the originals."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import poseanimate
from conftest import MOORE_TINY
from poseanimate.cli import main
from poseanimate.cli.convert import ConvertError, check_file, convert

NETWORKS = ("denoising_unet", "motion_module", "pose_guider", "reference_unet")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "moore-tiny-fp16"
    return convert(MOORE_TINY, str(out), report=lambda line: None), out


def test_folder_converts_every_network_and_checks_it(converted):
    written, out = converted
    assert sorted(os.listdir(out)) == [f"{n}.safetensors" for n in NETWORKS]  # tensors.safetensors is no network
    for name in NETWORKS:
        source = torch.load(os.path.join(MOORE_TINY, f"{name}.pth"), weights_only=True)
        result = load_file(out / f"{name}.safetensors")
        assert result.keys() == source.keys()
        for k, v in source.items():
            expected = v if k.endswith(".pos_encoder.pe") else v.half()
            assert result[k].dtype == expected.dtype and torch.equal(result[k], expected), k
    total = lambda folder, ext: sum(os.path.getsize(os.path.join(folder, f"{n}{ext}")) for n in NETWORKS)  # noqa: E731
    assert total(out, ".safetensors") < 0.56 * total(MOORE_TINY, ".pth")


def test_converted_folder_loads_and_animates_like_the_original_in_fp16(converted):
    _, out = converted
    half = poseanimate.load_models(str(out), device="cpu", dtype=torch.float16)
    reference = poseanimate.load_models(MOORE_TINY, device="cpu", dtype=torch.float16)
    assert half.variant == reference.variant == "moore" and half.trained_length == reference.trained_length
    for a, b in zip((half.reference_net, half.denoising_unet, half.pose_guider),
                    (reference.reference_net, reference.denoising_unet, reference.pose_guider)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    g = torch.Generator().manual_seed(0)
    inputs = dict(reference_latents=torch.randn(1, 4, 16, 8, generator=g), image_embeds=torch.randn(1, 32, generator=g),
                  pose_images=torch.rand(4, 128, 64, 3, generator=g), seed=3, steps=1, cfg=1.0,
                  context=dict(length=4, overlap=0))
    a, b = poseanimate.animate(half, **inputs), poseanimate.animate(reference, **inputs)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_shared_storage_is_cloned_and_checked(tmp_path):
    buffer = torch.randn(1000)
    sd = {"a.weight": buffer[:600].view(20, 30), "b.weight": buffer[600:].view(4, 100), "c.pos_encoder.pe": buffer[:10],
          "d.count": torch.arange(5)}
    torch.save(sd, tmp_path / "shared.pth")
    (out,) = convert(str(tmp_path / "shared.pth"), report=lambda line: None)
    assert out == str(tmp_path / "shared.safetensors")
    result = load_file(out)
    assert result["a.weight"].dtype == torch.float16 and torch.equal(result["a.weight"], sd["a.weight"].half())
    assert torch.equal(result["c.pos_encoder.pe"], sd["c.pos_encoder.pe"]) and torch.equal(result["d.count"], sd["d.count"])
    tampered = dict(sd, **{"b.weight": sd["b.weight"] + 1})
    with pytest.raises(ConvertError, match="b.weight did not survive"):
        check_file(out, tampered, torch.float16)
    save_file({k: v.half().contiguous() for k, v in sd.items() if k != "d.count"}, tmp_path / "short.safetensors")
    with pytest.raises(ConvertError, match="1 keys missing"):
        check_file(tmp_path / "short.safetensors", sd, torch.float16)


def test_replace_in_place_then_the_folder_still_loads(tmp_path, capsys):
    folder = tmp_path / "moore"
    folder.mkdir()
    for name in NETWORKS:
        shutil.copy(os.path.join(MOORE_TINY, f"{name}.pth"), folder)
    assert main(["convert", str(folder), "--replace"]) == 0
    assert sorted(os.listdir(folder)) == [f"{n}.safetensors" for n in NETWORKS]
    assert capsys.readouterr().out.count("tensors checked") == 4
    models = poseanimate.load_models(str(folder), device="cpu", dtype=torch.float32)
    assert models.variant == "moore"


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("poseanimate convert: error: ") and "no such file or folder" in err and err.count("\n") == 1
    (tmp_path / "x.safetensors").write_bytes(b"")
    shutil.copy(os.path.join(MOORE_TINY, "pose_guider.pth"), tmp_path / "x.pth")
    assert main(["convert", str(tmp_path / "x.pth")]) == 1
    assert "x.safetensors already exists" in capsys.readouterr().err


def _moore_copy(folder):
    folder.mkdir()
    for name in NETWORKS:
        shutil.copy(os.path.join(MOORE_TINY, f"{name}.pth"), folder)
    return folder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def _snapshot(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))}


def test_a_folder_converts_all_or_nothing_and_a_rerun_completes(tmp_path, capsys):
    folder = _moore_copy(tmp_path / "moore")
    whole = _truncate(folder / "pose_guider.pth")  # the third file in name order
    out = tmp_path / "moore-fp16"
    assert main(["convert", str(folder), str(out)]) == 1
    assert "pose_guider.pth" in capsys.readouterr().err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["moore"]
    (folder / "pose_guider.pth").write_bytes(whole)
    assert main(["convert", str(folder), str(out)]) == 0
    assert sorted(os.listdir(out)) == [f"{n}.safetensors" for n in NETWORKS]
    # interrupted while moving files into place: a rerun keeps what is there and writes the rest
    os.remove(out / "reference_unet.safetensors")
    kept = _snapshot(out)
    capsys.readouterr()
    assert main(["convert", str(folder), str(out)]) == 0
    assert capsys.readouterr().out.count("kept") == 3
    assert sorted(os.listdir(out)) == [f"{n}.safetensors" for n in NETWORKS]
    assert all((out / n).read_bytes() == data for n, data in kept.items())


def test_replace_is_all_or_nothing_and_never_reconverts(tmp_path, capsys):
    folder = _moore_copy(tmp_path / "moore")
    whole = _truncate(folder / "pose_guider.pth")
    before = _snapshot(folder)
    assert main(["convert", str(folder), "--replace"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert _snapshot(folder) == before  # nothing written, nothing removed, no staging folder left
    (folder / "pose_guider.pth").write_bytes(whole)
    assert main(["convert", str(folder), "--replace"]) == 0
    converted = _snapshot(folder)
    assert sorted(converted) == [f"{n}.safetensors" for n in NETWORKS]
    capsys.readouterr()
    assert main(["convert", str(folder), "--replace"]) == 0
    assert capsys.readouterr().out.count("already fp16") == 4
    assert _snapshot(folder) == converted and not any(".fp16." in n for n in os.listdir(folder))
    # a run stopped after moving the converted files but before removing the sources
    shutil.copy(os.path.join(MOORE_TINY, "motion_module.pth"), folder)
    assert main(["convert", str(folder), "--replace"]) == 0
    assert "kept" in capsys.readouterr().out and _snapshot(folder) == converted


def test_convert_into_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["convert", os.path.join(MOORE_TINY, "pose_guider.pth"), str(tmp_path / "no" / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the folder {tmp_path / 'no'} does not exist; create it first" in err
    assert main(["convert", MOORE_TINY, str(tmp_path / "no" / "deeper")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and not (tmp_path / "no").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """A real write failure: the process may write files of at most 64 KiB (RLIMIT_FSIZE, EFBIG)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    src = tmp_path / "denoising_unet.pth"
    shutil.copy(os.path.join(MOORE_TINY, "denoising_unet.pth"), src)
    assert os.path.getsize(src) > 4 * 65536
    script = os.path.join(os.path.dirname(sys.executable), "poseanimate")
    r = subprocess.run([script, "convert", str(src)], capture_output=True, text=True, preexec_fn=limit, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "writing" in r.stderr and "the file is too large" in r.stderr
    assert os.listdir(tmp_path) == ["denoising_unet.pth"]


def test_no_space_left_is_named(tmp_path, monkeypatch):
    import errno

    from poseanimate.cli import convert as convert_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convert_module, "save_file", full)
    with pytest.raises(ConvertError, match="failed \\(no space left on the disk\\); free some space"):
        convert(os.path.join(MOORE_TINY, "pose_guider.pth"), str(tmp_path / "x.safetensors"), report=lambda line: None)
    assert os.listdir(tmp_path) == []


def test_a_converted_file_is_not_converted_again(tmp_path, capsys):
    shutil.copy(os.path.join(MOORE_TINY, "pose_guider.pth"), tmp_path)
    assert main(["convert", str(tmp_path / "pose_guider.pth"), "--replace"]) == 0
    converted = (tmp_path / "pose_guider.safetensors").read_bytes()
    for extra in ([], ["--replace"]):
        capsys.readouterr()
        assert main(["convert", str(tmp_path / "pose_guider.safetensors"), *extra]) == 0
        assert "already fp16" in capsys.readouterr().out
        assert os.listdir(tmp_path) == ["pose_guider.safetensors"]
        assert (tmp_path / "pose_guider.safetensors").read_bytes() == converted


def test_sigterm_during_a_folder_conversion_leaves_the_folders_as_they_were(tmp_path, capsys, monkeypatch):
    import signal

    from poseanimate.cli import convert as convert_module

    folder = _moore_copy(tmp_path / "moore")
    before = _snapshot(folder)
    checked = []

    def stop_at_the_second_check(*args):
        checked.append(args[0])
        if len(checked) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(convert_module, "check_file", stop_at_the_second_check)
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "poseanimate convert: stopped by SIGTERM"
    assert sorted(os.listdir(tmp_path)) == ["moore"] and _snapshot(folder) == before
    checked.clear()
    assert main(["convert", str(folder), "--replace"]) == 128 + signal.SIGTERM
    assert _snapshot(folder) == before
