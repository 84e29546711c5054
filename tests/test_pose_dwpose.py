"""DWPose on onnxruntime, checked with stand-in ONNX models built here (real names and shapes)."""

import logging

import cv2
import numpy as np
import pytest

from poseanimate.pose import dwpose, standin
from poseanimate.pose.dwpose import DWPose, PersonDetector, WholeBodyEstimator
from poseanimate.pose.keypoints import NECK, present_mask

CPU = ["CPUExecutionProvider"]
BOX_W, BOX_H = 150, 260  # the drawn "person": small enough that a crop pixel is < 1 frame pixel


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dwpose")
    return {
        "detector": standin.build_detector(folder / "yolox_l.onnx", [standin.ChannelBox(2), standin.ChannelBox(1)]),
        "blob": standin.build_pose_model(folder / "blob.onnx", "blob"),
        "blob_b1": standin.build_pose_model(folder / "blob_b1.onnx", "blob", batch=1),
        "blob_fp16": standin.build_pose_model(folder / "blob_fp16.onnx", "blob", float16=True),
        "folder": folder,
    }


def _blob(image, x, y, color, sigma=2.0):
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    image[:] = np.maximum(image, (g[..., None] * np.asarray(color)).round().astype(np.uint8))


def _person(image, left, top, dot, outline=(200, 0, 0), dot_color=(255, 0, 255)):
    """A rectangle outline the stand-in detector boxes (red -> channel 2 in BGR, green -> 1)
    and a bright blob inside where the stand-in pose model puts every keypoint."""
    cv2.rectangle(image, (left, top), (left + BOX_W, top + BOX_H), outline, 2)
    _blob(image, *dot, dot_color)


class CountingSession:
    def __init__(self, session):
        self.session = session
        self.batches = []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.session.run(names, feeds)


@pytest.mark.parametrize("width, height", [(703, 411), (333, 517), (450, 450), (1201, 799), (250, 610)])
def test_keypoints_land_on_the_blob(models, width, height):
    rng = np.random.default_rng(width)
    left = int(rng.integers(0, width - BOX_W - 2))
    top = int(rng.integers(0, height - BOX_H - 2))
    dot = (left + BOX_W * rng.uniform(0.2, 0.8), top + BOX_H * rng.uniform(0.2, 0.8))
    image = np.zeros((height, width, 3), np.uint8)
    _person(image, left, top, dot)
    frame = DWPose(models["detector"], models["blob"], providers=CPU).detect(image)
    assert (frame.width, frame.height) == (width, height)
    (person,) = frame.people
    for part in ("body", "face", "left_hand", "right_hand"):
        points = person.part(part)
        assert present_mask(points).all()
        np.testing.assert_allclose(points[:, 0], dot[0], atol=1.0)
        np.testing.assert_allclose(points[:, 1], dot[1], atol=1.0)


def test_detector_decodes_known_boxes(tmp_path):
    boxes = [
        standin.FixedBox(200, 300, 100, 240, objectness=0.9),           # kept
        standin.FixedBox(205, 305, 100, 240, objectness=0.8),           # overlaps the first: suppressed
        standin.FixedBox(500, 200, 80, 160, objectness=0.7, class_score=0.8),  # kept, score 0.56
        standin.FixedBox(400, 500, 60, 60, objectness=0.95, class_index=1),    # not a person
        standin.FixedBox(100, 100, 50, 90, objectness=0.25),            # below 0.3
    ]
    path = standin.build_detector(tmp_path / "det.onnx", channel_boxes=(), fixed_boxes=boxes)
    detector = PersonDetector(path, providers=CPU)
    for width, height in [(1280, 720), (480, 960), (640, 640)]:
        ratio = min(640 / width, 640 / height)
        found, scores = detector(np.zeros((height, width, 3), np.uint8))
        expected = np.array([[150, 180, 250, 420], [460, 120, 540, 280]]) / ratio
        np.testing.assert_allclose(found, expected, rtol=1e-5)
        np.testing.assert_allclose(scores, [0.9, 0.56], rtol=1e-5)


def test_channel_detector_boxes_the_drawn_rectangle(models):
    image = np.zeros((517, 333, 3), np.uint8)
    _person(image, 60, 100, (120, 200))
    found, _ = PersonDetector(models["detector"], providers=CPU)(image)
    ratio = 640 / 517
    np.testing.assert_allclose(found[0], [59, 99, 60 + BOX_W + 2, 100 + BOX_H + 2], atol=2 / ratio)


def test_fixed_simcc_bins_map_through_the_crop(tmp_path):
    rng = np.random.default_rng(3)
    bins_x = rng.integers(0, 576, 133)
    bins_y = rng.integers(0, 768, 133)
    bins_x[:4], bins_y[:4] = [0, 288, 575, 144], [0, 384, 767, 96]
    peaks = rng.uniform(0.5, 1.0, 133)
    path = standin.build_pose_model(tmp_path / "fixed.onnx", "fixed", bins_x=bins_x, bins_y=bins_y, peaks=peaks)
    estimator = WholeBodyEstimator(path, providers=CPU)
    for box in ([100.0, 50.0, 300.0, 450.0], [10.0, 20.0, 410.0, 120.0]):
        x1, y1, x2, y2 = box
        width, height = (x2 - x1) * 1.25, (y2 - y1) * 1.25
        width, height = max(width, height * 0.75), max(height, width / 0.75)  # padded to 3:4
        keypoints, scores = estimator(np.zeros((500, 500, 3), np.uint8), np.array([box]))
        left, top = (x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2
        np.testing.assert_allclose(keypoints[0, :, 0], left + bins_x / 576 * width, atol=1e-6)
        np.testing.assert_allclose(keypoints[0, :, 1], top + bins_y / 768 * height, atol=1e-6)
        np.testing.assert_allclose(scores[0], peaks, rtol=1e-6)
        np.testing.assert_allclose(keypoints[0, 1], [(x1 + x2) / 2, (y1 + y2) / 2])  # bin centre -> box centre


def test_low_scores_are_missing(tmp_path):
    peaks = np.full(133, 0.9)
    peaks[[0, 5, 100]] = 0.2
    path = standin.build_pose_model(tmp_path / "fixed.onnx", "fixed", bins_x=np.full(133, 300),
                                    bins_y=np.full(133, 400), peaks=peaks)
    det = standin.build_detector(tmp_path / "det.onnx", (), [standin.FixedBox(320, 320, 200, 300, 0.9)])
    frame = DWPose(det, path, providers=CPU).detect(np.zeros((640, 640, 3), np.uint8))
    body = frame.people[0].present("body")
    assert not body[0]
    assert not body[5] and not body[NECK]  # COCO 5 is the left shoulder; the neck needs both
    assert body.sum() == 18 - 3
    assert not frame.people[0].present("left_hand")[100 - 91]


def _two_people(width=900, height=500):
    image = np.zeros((height, width, 3), np.uint8)
    _person(image, 60, 100, (130.3, 210.6), outline=(200, 0, 0), dot_color=(255, 0, 255))
    _person(image, 600, 150, (700.6, 330.2), outline=(0, 200, 0), dot_color=(140, 255, 255))
    return image, (130.3, 210.6), (700.6, 330.2)


@pytest.mark.parametrize("key, expected_batches", [("blob", [2]), ("blob_b1", [1, 1]), ("blob_fp16", [2])])
def test_person_crops_of_a_frame_are_batched_when_the_model_allows(models, key, expected_batches):
    estimator = WholeBodyEstimator(models[key], providers=CPU)
    estimator.session = CountingSession(estimator.session)
    assert estimator.dynamic_batch == (key != "blob_b1")
    image, first, second = _two_people()
    frame = DWPose(PersonDetector(models["detector"], providers=CPU), estimator).detect(image, people="all")
    assert estimator.session.batches == expected_batches
    found = sorted(tuple(p.body[0, :2]) for p in frame.people)
    np.testing.assert_allclose(found, sorted([first, second]), atol=1.0)


def test_best_person_is_the_most_confident(models):
    image, _, brighter = _two_people()
    frame = DWPose(models["detector"], models["blob"], providers=CPU).detect(image)
    (person,) = frame.people
    np.testing.assert_allclose(person.body[0, :2], brighter, atol=1.0)


def test_empty_frames_are_counted_in_one_warning(models, caplog):
    image, _, _ = _two_people()
    blank = np.zeros_like(image)
    model = DWPose(models["detector"], models["blob"], providers=CPU)
    calls = []
    with caplog.at_level(logging.WARNING, logger="poseanimate.pose"):
        frames = model.extract(np.stack([blank, image, blank]), progress=lambda d, t: calls.append((d, t)))
    assert [len(f.people) for f in frames] == [0, 1, 0]
    assert (frames[0].width, frames[0].height) == (900, 500)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3" in warnings[0].getMessage()
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_tensor_names_come_from_the_session(tmp_path, models):
    import onnx

    model = onnx.load(models["blob"])
    renames = {"input": "pixels", "simcc_x": "out_x", "simcc_y": "out_y"}
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = renames.get(value.name, value.name)
    onnx.save(model, tmp_path / "renamed.onnx")
    image, _, _ = _two_people()
    frame = DWPose(models["detector"], tmp_path / "renamed.onnx", providers=CPU).detect(image, "all")
    assert len(frame.people) == 2


def test_missing_model_file_names_file_folder_and_url(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        DWPose.from_folders([tmp_path])
    message = str(error.value)
    assert "yolox_l.onnx" in message and str(tmp_path) in message
    assert "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx" in message
    with pytest.raises(FileNotFoundError, match="dw-ll_ucoco_384.onnx"):
        DWPose(standin.build_detector(tmp_path / "d.onnx"), tmp_path / "dw-ll_ucoco_384.onnx")


@pytest.mark.parametrize("providers", [CPU, None])
def test_broken_model_file_is_named(tmp_path, monkeypatch, providers):
    monkeypatch.setattr(dwpose, "_chosen_providers", None)
    broken = tmp_path / "dw-ll_ucoco_384.onnx"
    broken.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ValueError, match="dw-ll_ucoco_384.onnx.*Download it again from https://huggingface.co"):
        WholeBodyEstimator(broken, providers=providers)
    assert dwpose.chosen_providers() is None


def test_sessions_are_reused_for_the_same_files(models):
    first = dwpose.get_dwpose(models["detector"], models["blob"], providers=CPU)
    assert dwpose.get_dwpose(models["detector"], models["blob"], providers=CPU) is first
    other = dwpose.get_dwpose(models["detector"], models["blob_b1"], providers=CPU)
    assert other is not first and not other.pose_model.dynamic_batch
    dwpose.release_dwpose()
    assert dwpose.get_dwpose(models["detector"], models["blob_b1"], providers=CPU) is not other
    dwpose.release_dwpose()


def test_locate_model_finds_controlnet_aux_layout(tmp_path):
    target = tmp_path / "yzd-v" / "DWPose"
    target.mkdir(parents=True)
    (target / "yolox_l.onnx").write_bytes(b"x")
    assert dwpose.locate_model("yolox_l.onnx", [tmp_path / "other", tmp_path]) == target / "yolox_l.onnx"


def test_swapped_models_are_rejected(models):
    with pytest.raises(ValueError, match="is not a YOLOX detector"):
        PersonDetector(models["blob"], providers=CPU)
    with pytest.raises(ValueError, match="is not a DWPose whole-body model"):
        WholeBodyEstimator(models["detector"], providers=CPU)


def test_bad_inputs_are_named(models):
    model = DWPose(models["detector"], models["blob"], providers=CPU)
    with pytest.raises(ValueError, match="RGB uint8"):
        model.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="best, all"):
        model.detect(np.zeros((64, 64, 3), np.uint8), people="everyone")


def test_provider_choice_is_made_once_and_quietly(models, monkeypatch, capfd):
    import onnxruntime as ort

    monkeypatch.setattr(dwpose, "_chosen_providers", None)
    first = dwpose.create_session(models["blob"])
    second = dwpose.create_session(models["detector"])
    chosen = dwpose.chosen_providers()
    captured = capfd.readouterr()
    assert "[E:onnxruntime" not in captured.err and "[W:onnxruntime" not in captured.err
    if "CUDAExecutionProvider" in first.get_providers():
        assert chosen[0] == "CUDAExecutionProvider"
    else:
        assert chosen == ["CPUExecutionProvider"]
    assert second.get_providers() == first.get_providers()
    assert "CUDAExecutionProvider" not in chosen or "CUDAExecutionProvider" in ort.get_available_providers()
