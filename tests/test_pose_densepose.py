"""DensePose control images (pose.densepose) on the stand-in TorchScript of tests/densepose_standin.py.

The colours are the values comfyui_controlnet_aux's "Viridis (MagicAnimate)" rendering produces (OpenCV's
viridis at floor(I * 255 / 24), converted to RGB, the black canvas replaced by (68, 1, 84)); MagicAnimate's
demo DensePose videos decode to these colours."""

import logging
import os

import numpy as np
import pytest
import torch

from densepose_standin import LAYOUT, write_densepose
from poseanimate.pose import densepose as dp
from tiny_models import person_frames

# RGB of part indices 0 (background), 1, 2, 12, 23, 24 as the reference renders them.
REFERENCE_COLORS = {0: (68, 1, 84), 1: (71, 16, 99), 2: (72, 31, 112), 12: (33, 144, 141), 23: (226, 228, 24),
                    24: (253, 231, 37)}
RED, GREEN = (230, 30, 30), (20, 220, 20)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("densepose")
    path = write_densepose(folder / dp.MODEL_FILE, channels=(0, 1))
    return dp.DensePose.from_file(path)


def frame_with_box(height, width, box, color=RED):
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    x0, y0, x1, y1 = box
    frame[y0:y1, x0:x1] = color
    return frame


def drawn_box(image):
    """(x0, y0, x1, y1) of the pixels that are not background."""
    mask = (image != dp.part_colors()[0]).any(-1)
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_part_colors_are_the_references():
    colors = dp.part_colors()
    assert colors.shape == (25, 3) and colors.dtype == np.uint8
    for index, rgb in REFERENCE_COLORS.items():
        assert tuple(colors[index]) == rgb
    assert dp.background_color() == (68, 1, 84)
    assert len({tuple(c) for c in colors}) == 25
    assert colors.min() > 0  # the reference's "0 -> background" replacement touches only the canvas


def test_stand_in_person_at_the_detection_size(standin):
    frame = frame_with_box(128, 64, (16, 20, 48, 120))  # short side 64 = resolution: no resize
    image, people = standin.render(frame, 64, 128, "stretch", resolution=64)
    assert people == 1 and image.shape == (128, 64, 3) and image.dtype == np.uint8
    assert drawn_box(image) == (16, 20, 48, 120)
    labels, _ = standin.render_labels(frame, 64, 128, "stretch", resolution=64)
    np.testing.assert_array_equal(image, dp.part_colors()[labels])
    assert set(np.unique(labels[20:120, 16:48])) == set(np.unique(LAYOUT))
    assert set(np.unique(labels[21:34, 18:46])) <= {23, 24}  # head on top
    assert set(np.unique(labels[110:118, 18:46])) <= {5, 6, 13, 14}  # lower legs and feet below
    assert (labels[:20] == 0).all() and (labels[:, :16] == 0).all()


def test_fits_place_the_person(standin):
    frame = frame_with_box(128, 256, (96, 32, 160, 128))  # wide frame, person in the middle
    padded, _ = standin.render(frame, 128, 128, "pad", resolution=64)
    assert (padded[:32] == dp.part_colors()[0]).all() and (padded[96:] == dp.part_colors()[0]).all()
    np.testing.assert_allclose(drawn_box(padded), (48, 48, 80, 96), atol=1)
    cropped, _ = standin.render(frame, 128, 128, "crop", resolution=64)
    np.testing.assert_allclose(drawn_box(cropped), (32, 32, 96, 128), atol=1)
    stretched, _ = standin.render(frame, 128, 128, "stretch", resolution=64)
    np.testing.assert_allclose(drawn_box(stretched), (48, 32, 80, 128), atol=1)


def test_crop_cuts_people_outside_the_canvas(standin):
    frame = frame_with_box(64, 256, (0, 8, 40, 64))  # at the left edge of a wide frame
    image, people = standin.render(frame, 64, 64, "crop", resolution=64)
    assert people == 0 and (image == dp.part_colors()[0]).all()


class Fixed(torch.nn.Module):
    """Two overlapping people: the first all part 5, the second part 7 with its left half background."""

    def forward(self, image):
        fine = torch.zeros(2, 25, 112, 112)
        fine[0, 5] = fine[1, 7] = 1.0
        coarse = torch.zeros(2, 2, 112, 112)
        coarse[0, 1] = 1.0
        coarse[1, 1, :, 56:] = 1.0
        boxes = torch.tensor([[0.0, 0.0, 40.0, 64.0], [20.0, 0.0, 60.0, 64.0]])
        return boxes, coarse, fine, torch.zeros_like(fine), torch.zeros_like(fine)


def test_later_people_overwrite_where_they_have_parts():
    labels, people = dp.DensePose(Fixed()).render_labels(np.zeros((64, 64, 3), np.uint8), 64, 64, "stretch",
                                                         resolution=64)
    assert people == 2
    assert (labels[:, :20] == 5).all()
    assert (labels[:, 20:40] == 5).all()  # the second person's background half leaves the first one
    assert (labels[:, 40:60] == 7).all() and (labels[:, 60:] == 0).all()


def test_extract_progress_empty_frames_and_cancel(standin, caplog):
    frames = person_frames(3, 64, 96)
    frames[1] = 40  # nobody
    calls = []
    with caplog.at_level(logging.WARNING, logger="poseanimate.pose"):
        images = standin.extract(frames, 48, 64, progress=lambda done, total: calls.append((done, total)),
                                 resolution=64)
    assert images.shape == (3, 64, 48, 3) and calls == [(1, 3), (2, 3), (3, 3)]
    assert (images[1] == dp.part_colors()[0]).all() and not (images[0] == dp.part_colors()[0]).all()
    assert "nobody in 1 of 3 frames (frames 1)" in caplog.text

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        standin.extract(frames, 48, 64, progress=cancel, resolution=64)


def test_float16_matches_float32(tmp_path):
    path = write_densepose(tmp_path / "standin.torchscript")
    frame = person_frames(1, 64, 96)[0]
    full, _ = dp.DensePose.from_file(path).render_labels(frame, 64, 96, resolution=64)
    half, _ = dp.DensePose.from_file(path, dtype=torch.float16).render_labels(frame, 64, 96, resolution=64)
    assert (full != 0).sum() > 500
    assert (full != half).mean() < 0.01


def test_ready_made_renders_are_fitted():
    labels = np.zeros((2, 96, 64), dtype=np.uint8)
    labels[:, 10:90, 20:44] = np.arange(1, 25).repeat(1)[None, None, :24]
    renders = dp.colorize(labels)
    fitted = dp.fit_images(renders, 128, 128, "pad")
    assert fitted.shape == (2, 128, 128, 3)
    assert {tuple(c) for c in fitted.reshape(-1, 3)} == {tuple(c) for c in renders.reshape(-1, 3)}
    assert (fitted[:, :, :21] == dp.part_colors()[0]).all()  # 64 * 4/3 = 85 wide, centred
    np.testing.assert_array_equal(dp.fit_images(renders, 64, 96, "stretch"), renders)
    assert dp.palette_share(fitted) == 1.0
    skeleton = np.zeros((1, 96, 64, 3), dtype=np.uint8)
    skeleton[0, 40:44, 10:50] = (255, 0, 0)
    assert dp.palette_share(skeleton) == 0.0


def test_bad_inputs(standin, tmp_path):
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"RGB uint8 \[height, width, 3\].*float32"):
        standin.render(frame.astype(np.float32), 64, 64)
    with pytest.raises(ValueError, match="unknown fit 'zoom'; valid choices: pad, crop, stretch"):
        standin.extract([frame], 64, 64, fit="zoom")
    with pytest.raises(ValueError, match="resolution must be an integer of at least 64, got 32"):
        standin.extract([frame], 64, 64, resolution=32)
    with pytest.raises(ValueError, match="width and height must be positive"):
        standin.render(frame, 0, 64)
    with pytest.raises(ValueError, match=r"RGB uint8 \[frames, height, width, 3\]"):
        dp.fit_images(frame, 64, 64)
    with pytest.raises(FileNotFoundError, match=r"'densepose_r50_fpn_dl.torchscript' not found in .*"
                                                r"https://huggingface.co/LayerNorm/DensePose-TorchScript-with-hint-image/"
                                                r"resolve/main/densepose_r50_fpn_dl.torchscript"):
        dp.locate_model(dp.MODEL_FILE, [tmp_path])
    broken = tmp_path / dp.MODEL_FILE
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"not a TorchScript model .*Download it again from https://huggingface.co/"):
        dp.DensePose.from_file(broken)
    pickled = tmp_path / "weights.torchscript"
    torch.save({"weight": torch.zeros(2)}, pickled)
    with pytest.raises(ValueError, match="not a TorchScript model"):
        dp.load_module(pickled)
    conv = tmp_path / "conv.torchscript"
    torch.jit.script(torch.nn.Conv2d(3, 4, 1)).save(str(conv))
    with pytest.raises(ValueError, match=r"conv.torchscript failed on a uint8 image of shape \(3, 64, 64\) .*is it a "
                                         r"DensePose TorchScript"):
        dp.DensePose.from_file(conv).render(frame, 64, 64, resolution=64)
    wrong = tmp_path / "wrong.torchscript"
    torch.jit.script(torch.nn.Flatten(0)).save(str(wrong))
    with pytest.raises(ValueError, match=r"wrong.torchscript is not a DensePose chart model: expected boxes \[N, 4\]"):
        dp.DensePose.from_file(wrong).render(frame, 64, 64, resolution=64)


def test_model_lookup_and_cache(tmp_path):
    aux = tmp_path / "ckpts" / "LayerNorm" / "DensePose-TorchScript-with-hint-image"
    aux.mkdir(parents=True)
    write_densepose(aux / dp.MODEL_FILE)
    path = dp.locate_model(dp.MODEL_FILE, [tmp_path / "missing", tmp_path / "ckpts"])
    assert path == aux / dp.MODEL_FILE
    first = dp.get_densepose(path)
    assert dp.get_densepose(path) is first
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    second = dp.get_densepose(path)
    assert second is not first
    dp.release_densepose()
    assert dp.get_densepose(path) is not second
    dp.release_densepose()


def test_download_entry():
    from poseanimate.cli import download as dl

    (remote,) = dl.remotes("moore", ["densepose"])["densepose"]
    assert remote.url() == dp.DOWNLOAD_URLS[dp.MODEL_FILE]
    assert remote.dest == os.path.join(dl.DENSEPOSE_DIR, dp.MODEL_FILE) and dl.DENSEPOSE == [remote]
