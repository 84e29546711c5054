"""DWPose on onnxruntime: YOLOX person detector + RTMPose-style whole-body model.

Pre- and post-processing follow the DWPose reference (as vendored by Moore-AnimateAnyone and
comfyui_controlnet_aux): both networks see the frame in BGR order (images come in as RGB;
resizing and warping act per channel, so the channels are swapped on the small network
inputs rather than on the frame); the detector gets it
letterboxed into the top-left of a 640x640 canvas filled with 114, raw 0-255 values; each
person box is grown x1.25 about its centre, padded to the pose model's 3:4 aspect and warped
to 288x384, normalised with the ImageNet mean/std; SimCC peaks (argmax, score = lower of the
two maxima) are divided by the split ratio and mapped back through the crop.

Where the reference runs the pose model on the whole image when the detector finds nobody,
this module returns an empty frame instead and counts such frames in one warning.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from .keypoints import CONFIDENCE_THRESHOLD, PoseFrame, person_from_wholebody

log = logging.getLogger("poseanimate.pose")

DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
DOWNLOAD_URLS = {
    DETECTOR_FILE: "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx",
    POSE_FILE: "https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

DETECTOR_STRIDES = (8, 16, 32)
NMS_THRESHOLD = 0.45
PERSON_SCORE_THRESHOLD = 0.3
BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
LETTERBOX_FILL = 114
PEOPLE_MODES = ("best", "all")


# ---------------------------------------------------------------------------------------
# model files and sessions


def locate_model(filename: str, folders: Sequence[str | os.PathLike]) -> Path:
    """The first ``folder/filename`` (or ``folder/yzd-v/DWPose/filename``, controlnet_aux's
    layout) that exists; FileNotFoundError naming the file, the folders and the download URL."""
    folders = [Path(f) for f in folders]
    for folder in folders:
        for candidate in (folder / filename, folder / "yzd-v" / "DWPose" / filename):
            if candidate.is_file():
                return candidate
    url = DOWNLOAD_URLS.get(filename, "https://huggingface.co/yzd-v/DWPose")
    where = ", ".join(str(f) for f in folders) or "(no folder given)"
    raise FileNotFoundError(
        f"DWPose model file {filename!r} not found in {where}. Download it from {url} "
        f"and put it in {folders[0] if folders else 'your models folder'}."
    )


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        url = DOWNLOAD_URLS.get(path.name, f"{DOWNLOAD_URLS[DETECTOR_FILE]} or {DOWNLOAD_URLS[POSE_FILE]}")
        raise FileNotFoundError(
            f"DWPose model file {path.name!r} not found in {path.parent}. Download it from {url} "
            f"and put it there."
        )
    return path


_provider_lock = threading.Lock()
_chosen_providers: list[str] | None = None


def chosen_providers() -> list[str] | None:
    """The providers this process settled on, or None before the first session."""
    return None if _chosen_providers is None else list(_chosen_providers)


def _session_options(severity: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = severity
    return options


def _new_session(path: Path, providers: Sequence[str], severity: int = 3):
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(str(path), sess_options=_session_options(severity), providers=list(providers))
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail) as error:
        url = DOWNLOAD_URLS.get(path.name, "https://huggingface.co/yzd-v/DWPose")
        raise ValueError(
            f"onnxruntime cannot load {path.name!r} from {path.parent}: it is truncated or not an "
            f"ONNX model ({error}). Download it again from {url}."
        ) from error


def create_session(path: str | os.PathLike, providers: Sequence[str] | None = None):
    """An onnxruntime session for ``path``.

    Without ``providers``, the first call decides for the whole process: CUDA when
    onnxruntime lists it and a session created with it keeps it, otherwise CPU. The CUDA
    attempt runs with onnxruntime's logging silenced, so a CUDA provider that cannot load
    (missing CUDA/cuDNN libraries) costs one info line instead of a wall of errors.
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    global _chosen_providers
    path = _check_file(path)
    if providers is not None:
        return _new_session(path, providers)
    with _provider_lock:
        if _chosen_providers is not None:
            return _new_session(path, _chosen_providers)
        if CUDA not in ort.get_available_providers():
            _chosen_providers = [CPU]
            log.info("DWPose: onnxruntime has no CUDA provider; running on CPU")
            return _new_session(path, _chosen_providers)
        ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(str(path), sess_options=_session_options(4), providers=[CUDA, CPU])
        except (ort_errors.Fail, ort_errors.RuntimeException, ort_errors.EPFail,
                ort_errors.InvalidProtobuf, ort_errors.InvalidGraph):
            session = None
        finally:
            ort.set_default_logger_severity(2)
        if session is not None and CUDA in session.get_providers():
            _chosen_providers = [CUDA, CPU]
            log.info("DWPose: onnxruntime runs on CUDA")
            return session
        if session is None:
            session = _new_session(path, [CPU])  # a broken file raises here, before anything is decided
        _chosen_providers = [CPU]
        log.info("DWPose: onnxruntime's CUDA provider did not load (CUDA/cuDNN libraries); running on CPU")
        return session


def _input_dtype(node, path: Path) -> type:
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    if node.type not in dtypes:
        raise ValueError(f"{path.name}: input {node.name!r} is {node.type}; DWPose models take float or float16 images")
    return dtypes[node.type]


def _static_dim(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


# ---------------------------------------------------------------------------------------
# detector


def bgr_planes(image_rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [h, w, 3] -> BGR float32 [3, h, w]."""
    return np.stack(cv2.split(image_rgb)[::-1]).astype(np.float32)


def letterbox(image_rgb: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize into the top-left of a ``size_hw`` canvas filled with 114; returns BGR CHW float32
    (raw 0-255) and the ratio."""
    height, width = image_rgb.shape[:2]
    ratio = min(size_hw[0] / height, size_hw[1] / width)
    new_w, new_h = int(width * ratio), int(height * ratio)
    padded = np.full((size_hw[0], size_hw[1], 3), LETTERBOX_FILL, dtype=np.uint8)
    padded[:new_h, :new_w] = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return bgr_planes(padded), ratio


@functools.lru_cache(maxsize=4)
def yolox_grid(size_hw: tuple[int, int], strides: tuple[int, ...] = DETECTOR_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor grid cells [A, 2] (x, y) and their strides [A, 1], in YOLOX's output order."""
    grids, expanded = [], []
    for stride in strides:
        xv, yv = np.meshgrid(np.arange(size_hw[1] // stride), np.arange(size_hw[0] // stride))
        grid = np.stack((xv, yv), 2).reshape(-1, 2)
        grids.append(grid)
        expanded.append(np.full((len(grid), 1), stride))
    grid, stride_column = np.concatenate(grids), np.concatenate(expanded)
    grid.flags.writeable = stride_column.flags.writeable = False  # shared by the cache
    return grid, stride_column


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression (YOLOX demo convention: +1 on widths and heights)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def decode_yolox(predictions: np.ndarray, size_hw: tuple[int, int], ratio: float,
                 score_threshold: float = PERSON_SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output [A, 5 + classes] -> person boxes [N, 4] (x1, y1, x2, y2 in the frame) and scores [N],
    best first."""
    grid, strides = yolox_grid(size_hw)
    if predictions.ndim != 2 or predictions.shape[0] != len(grid) or predictions.shape[1] < 6:
        raise ValueError(
            f"detector output has shape {predictions.shape}; a YOLOX detector for a "
            f"{size_hw[1]}x{size_hw[0]} input gives [{len(grid)}, 85]"
        )
    scores = predictions[:, 4] * predictions[:, 5]
    candidates = np.where(scores > score_threshold)[0]
    chosen = predictions[candidates]
    centers = (chosen[:, :2] + grid[candidates]) * strides[candidates]
    sizes = np.exp(chosen[:, 2:4]) * strides[candidates]
    boxes = np.concatenate([centers - sizes / 2.0, centers + sizes / 2.0], axis=1) / ratio
    keep = nms(boxes, scores[candidates], nms_threshold)
    return boxes[keep], scores[candidates][keep]


class PersonDetector:
    """YOLOX person detector (``yolox_l.onnx``) on an onnxruntime session."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 session=None):
        self.path = Path(path)
        self.session = session if session is not None else create_session(path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3 or len(outputs) != 1:
            raise ValueError(
                f"{self.path.name} is not a YOLOX detector: expected one input [1, 3, 640, 640] "
                f"and one output [1, 8400, 85], got inputs {[i.shape for i in inputs]} and "
                f"outputs {[o.shape for o in outputs]} (is it the pose model?)"
            )
        self.input_name = inputs[0].name
        self.input_dtype = _input_dtype(inputs[0], self.path)
        self.output_name = outputs[0].name
        self.size_hw = (_static_dim(shape[2]) or 640, _static_dim(shape[3]) or 640)

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [N, 4] (x1, y1, x2, y2, frame pixels) and scores [N], best first, in an RGB uint8 image."""
        tensor, ratio = letterbox(image_rgb, self.size_hw)
        feed = {self.input_name: tensor[None].astype(self.input_dtype, copy=False)}
        (output,) = self.session.run([self.output_name], feed)
        return decode_yolox(np.asarray(output, dtype=np.float32)[0], self.size_hw, ratio)


# ---------------------------------------------------------------------------------------
# whole-body pose model


@dataclass(frozen=True)
class Crop:
    """A person box as the pose model sees it: centre and size (w, h) in frame pixels."""

    center: np.ndarray
    scale: np.ndarray


def box_to_crop(box: np.ndarray, input_wh: tuple[int, int], padding: float = BOX_PADDING) -> Crop:
    """Box centre; box size x``padding``, then grown to the model's aspect ratio."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_wh[0] / input_wh[1]
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return Crop(center, scale)


def crop_matrix(crop: Crop, input_wh: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix taking frame pixels to model-input pixels (the reference's three-point construction)."""
    dst_w, dst_h = input_wh
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = crop.center
    src[1] = crop.center + np.array([0.0, crop.scale[0] * -0.5])
    src[2] = src[1] + np.array([-(src[0] - src[1])[1], (src[0] - src[1])[0]])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, dst_w * -0.5])
    dst[2] = dst[1] + np.array([-(dst[0] - dst[1])[1], (dst[0] - dst[1])[0]])
    return cv2.getAffineTransform(src, dst)


_MEAN32 = POSE_MEAN.astype(np.float32)[:, None, None]
_STD32 = POSE_STD.astype(np.float32)[:, None, None]


def crop_person(image_rgb: np.ndarray, crop: Crop, input_wh: tuple[int, int]) -> np.ndarray:
    """Warped, normalised model input [3, h, w] float32, BGR channel order."""
    patch = cv2.warpAffine(image_rgb, crop_matrix(crop, input_wh), input_wh, flags=cv2.INTER_LINEAR)
    return (bgr_planes(patch) - _MEAN32) / _STD32


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """SimCC [N, K, Wx], [N, K, Wy] -> locations [N, K, 2] in model-input pixels and scores [N, K]."""
    x_locs = simcc_x.argmax(axis=-1)
    y_locs = simcc_y.argmax(axis=-1)
    locs = np.stack([x_locs, y_locs], axis=-1).astype(np.float64)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float64)
    locs[scores <= 0.0] = -1
    return locs / split_ratio, scores


def crop_to_frame(points: np.ndarray, crop: Crop, input_wh: tuple[int, int]) -> np.ndarray:
    """Model-input pixels [K, 2] -> frame pixels."""
    return points / np.asarray(input_wh, dtype=np.float64) * crop.scale + crop.center - crop.scale / 2


class WholeBodyEstimator:
    """RTMPose-style whole-body model (``dw-ll_ucoco_384.onnx``): 133 keypoints per person box."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 session=None):
        self.path = Path(path)
        self.session = session if session is not None else create_session(path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if (len(inputs) != 1 or len(shape) != 4 or len(outputs) != 2
                or _static_dim(shape[2]) is None or _static_dim(shape[3]) is None):
            raise ValueError(
                f"{self.path.name} is not a DWPose whole-body model: expected one input "
                f"[N, 3, 384, 288] and outputs simcc_x [N, 133, 576], simcc_y [N, 133, 768], got "
                f"inputs {[i.shape for i in inputs]} and outputs {[o.shape for o in outputs]} "
                f"(is it the detector?)"
            )
        self.input_name = inputs[0].name
        self.input_dtype = _input_dtype(inputs[0], self.path)
        names = [o.name for o in outputs]
        if {"simcc_x", "simcc_y"} == set(names):
            names = ["simcc_x", "simcc_y"]
        self.output_names = names
        self.input_wh = (shape[3], shape[2])
        self.batch_size = _static_dim(shape[0])

    @property
    def dynamic_batch(self) -> bool:
        return self.batch_size is None

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = batch.astype(self.input_dtype, copy=False)
        if self.dynamic_batch:
            simcc_x, simcc_y = self.session.run(self.output_names, {self.input_name: batch})
            return np.asarray(simcc_x, dtype=np.float32), np.asarray(simcc_y, dtype=np.float32)
        xs, ys = [], []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            count = len(chunk)
            if count < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - count, *chunk.shape[1:]), chunk.dtype)])
            simcc_x, simcc_y = self.session.run(self.output_names, {self.input_name: chunk})
            xs.append(np.asarray(simcc_x, dtype=np.float32)[:count])
            ys.append(np.asarray(simcc_y, dtype=np.float32)[:count])
        return np.concatenate(xs), np.concatenate(ys)

    def __call__(self, image_rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints [N, 133, 2] in frame pixels and scores [N, 133] for each box [N, 4] of an RGB uint8 image."""
        if len(boxes) == 0:
            return np.zeros((0, 133, 2)), np.zeros((0, 133))
        crops = [box_to_crop(b, self.input_wh) for b in boxes]
        batch = np.stack([crop_person(image_rgb, c, self.input_wh) for c in crops])
        simcc_x, simcc_y = self._run(batch)
        split_ratio = simcc_x.shape[-1] / self.input_wh[0]
        locs, scores = decode_simcc(simcc_x, simcc_y, split_ratio)
        keypoints = np.stack([crop_to_frame(l, c, self.input_wh) for l, c in zip(locs, crops)])
        return keypoints, scores


# ---------------------------------------------------------------------------------------
# the pipeline


def _check_image(image: np.ndarray, index: int | None = None) -> np.ndarray:
    what = "image" if index is None else f"image {index}"
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what} must be RGB uint8 [height, width, 3], got dtype {image.dtype} shape {image.shape}; "
            "convert ComfyUI IMAGE tensors with (image * 255).round().clamp(0, 255).byte()"
        )
    return image


def check_people_mode(people: str) -> str:
    if people not in PEOPLE_MODES:
        raise ValueError(f"unknown people mode {people!r}; valid choices: {', '.join(PEOPLE_MODES)}")
    return people


class DWPose:
    """Whole-body pose extraction: RGB uint8 frames in, :class:`PoseFrame` out."""

    def __init__(self, detector: str | os.PathLike | PersonDetector,
                 pose_model: str | os.PathLike | WholeBodyEstimator,
                 providers: Sequence[str] | None = None,
                 threshold: float = CONFIDENCE_THRESHOLD):
        self.detector = detector if isinstance(detector, PersonDetector) else PersonDetector(detector, providers)
        self.pose_model = (pose_model if isinstance(pose_model, WholeBodyEstimator)
                           else WholeBodyEstimator(pose_model, providers))
        self.threshold = threshold

    @classmethod
    def from_folders(cls, folders: Sequence[str | os.PathLike], providers: Sequence[str] | None = None,
                     detector_file: str = DETECTOR_FILE, pose_file: str = POSE_FILE) -> "DWPose":
        return cls(locate_model(detector_file, folders), locate_model(pose_file, folders), providers)

    def detect(self, image: np.ndarray, people: str = "best") -> PoseFrame:
        """People in one RGB uint8 image; ``people="best"`` keeps the one with the highest mean
        body-keypoint score, ``"all"`` keeps everyone in detector order (best box first)."""
        check_people_mode(people)
        image = _check_image(image)
        height, width = image.shape[:2]
        boxes, _ = self.detector(image)
        keypoints, scores = self.pose_model(image, boxes)
        if people == "best" and len(boxes) > 1:
            best = int(scores[:, :17].mean(axis=1).argmax())
            keypoints, scores = keypoints[best:best + 1], scores[best:best + 1]
        found = [person_from_wholebody(k, s, self.threshold) for k, s in zip(keypoints, scores)]
        return PoseFrame([p for p in found if not p.is_empty()], width, height)

    __call__ = detect

    def extract(self, images: Iterable[np.ndarray], people: str = "best",
                progress: Callable[[int, int], None] | None = None) -> list[PoseFrame]:
        """One :class:`PoseFrame` per image; frames with nobody are empty and counted in one warning.

        ``images`` may be a [F, H, W, 3] uint8 array or any sequence of RGB uint8 images;
        ``progress(done, total)`` is called after each frame (an exception raised there, such as
        an interrupt, stops the extraction).
        """
        check_people_mode(people)
        images = list(images) if not isinstance(images, np.ndarray) else images
        total = len(images)
        frames, empty = [], []
        for index, image in enumerate(images):
            frame = self.detect(_check_image(image, index), people)
            if not frame.people:
                empty.append(index)
            frames.append(frame)
            if progress is not None:
                progress(index + 1, total)
        if empty:
            shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
            log.warning("DWPose found nobody in %d of %d frames (frames %s); those frames are empty",
                        len(empty), total, shown)
        return frames


_cache_lock = threading.Lock()
_cached: tuple[tuple, DWPose] | None = None


def get_dwpose(detector: str | os.PathLike, pose_model: str | os.PathLike,
               providers: Sequence[str] | None = None) -> DWPose:
    """A DWPose for these files, reused while the same files (same paths and modification
    times) and providers are asked for; one pair of sessions is kept at a time."""
    global _cached
    paths = [_check_file(detector).resolve(), _check_file(pose_model).resolve()]
    key = (*((str(p), p.stat().st_mtime_ns) for p in paths), None if providers is None else tuple(providers))
    with _cache_lock:
        if _cached is None or _cached[0] != key:
            _cached = None
            _cached = (key, DWPose(paths[0], paths[1], providers))
        return _cached[1]


def release_dwpose() -> None:
    """Drop the cached sessions (and the memory they hold)."""
    global _cached
    with _cache_lock:
        _cached = None
