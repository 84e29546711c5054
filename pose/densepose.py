"""DensePose control images for MagicAnimate, on the TorchScript export comfyui_controlnet_aux uses.

The model (``densepose_r50_fpn_dl.torchscript`` from LayerNorm/DensePose-TorchScript-with-hint-image, a
traced detectron2 DensePose R-CNN, R50-FPN with the DeepLab head; the r101 file has the same interface)
takes one RGB uint8 image ``[3, H, W]`` on its device and returns, for the N people it finds (best first):
boxes ``[N, 4]`` (x0, y0, x1, y1 in input pixels), coarse segmentation ``[N, 2, 112, 112]`` (background /
body logits), fine segmentation ``[N, 25, 112, 112]`` (background + 24 body parts) and U, V
``[N, 25, 112, 112]`` (chart coordinates per part). As in comfyui_controlnet_aux, the frame is resized
so its short side is ``resolution`` (cubic when enlarging, area when shrinking) and edge-padded to
multiples of 64.

Rendering follows MagicAnimate's DensePose videos (its demo videos decode to these colours; it is
comfyui_controlnet_aux's "Viridis (MagicAnimate)"): for each person the fine and coarse maps are resampled
bilinearly to the box's integer size (x, y, w, h truncated), the part index I is the fine argmax where the
coarse argmax is body and 0 elsewhere, later people overwrite earlier ones where I > 0, and a pixel's
colour is OpenCV's viridis at ``floor(I * 255 / 24)``; the background is viridis(0) = RGB (68, 1, 84).
Here the maps are resampled straight into the requested canvas (``fit``: pad, crop or stretch the frame
into width x height), so at the detection size the result is the reference's, and at other sizes no
second resize blurs the part colours.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

log = logging.getLogger("poseanimate.pose")

MODEL_FILE = "densepose_r50_fpn_dl.torchscript"
MODEL_FILES = (MODEL_FILE, "densepose_r101_fpn_dl.torchscript")
HF_REPO = "LayerNorm/DensePose-TorchScript-with-hint-image"
DOWNLOAD_URLS = {name: f"https://huggingface.co/{HF_REPO}/resolve/main/{name}" for name in MODEL_FILES}
PARTS = 24
FITS = ("pad", "crop", "stretch")
DETECT_RESOLUTION = 512
PAD_MULTIPLE = 64
PALETTE_TOLERANCE = 12  # per channel, for video-compressed renders


# ---------------------------------------------------------------------------------------
# colours


@functools.lru_cache(maxsize=1)
def part_colors() -> np.ndarray:
    """RGB uint8 [25, 3]: the colour of part index I (0 = background)."""
    values = (np.arange(PARTS + 1, dtype=np.float32) * np.float32(255.0 / PARTS)).clip(0, 255).astype(np.uint8)
    colors = cv2.applyColorMap(values[:, None], cv2.COLORMAP_VIRIDIS)[:, 0, ::-1].copy()
    colors.flags.writeable = False
    return colors


def background_color() -> tuple[int, int, int]:
    return tuple(int(c) for c in part_colors()[0])


def colorize(labels: np.ndarray) -> np.ndarray:
    """Part indices [..., H, W] (0..24) -> RGB uint8 [..., H, W, 3]."""
    return part_colors()[np.asarray(labels)]


def palette_share(images: np.ndarray, tolerance: int = PALETTE_TOLERANCE) -> float:
    """The fraction of pixels (RGB uint8 [..., 3]) within ``tolerance`` per channel of a part colour:
    about 1 for DensePose renders (0.93 for MagicAnimate's demo videos), near 0 for skeleton renders."""
    pixels = np.asarray(images).reshape(-1, 3)
    if not len(pixels):
        return 0.0
    step = max(1, len(pixels) // 200_000)
    sample = pixels[::step].astype(np.int16)
    distance = np.abs(sample[:, None, :] - part_colors().astype(np.int16)[None]).max(axis=-1).min(axis=1)
    return float((distance <= tolerance).mean())


# ---------------------------------------------------------------------------------------
# geometry: a frame placed in the output canvas


@dataclass(frozen=True)
class Placement:
    """Where a frame lands in a ``width`` x ``height`` canvas: its resized size and top-left offset
    (negative when cropped)."""

    width: int
    height: int
    left: int
    top: int
    content_width: int
    content_height: int

    def visible(self) -> tuple[int, int, int, int]:
        """The canvas rectangle (x0, y0, x1, y1) the frame covers."""
        return (max(self.left, 0), max(self.top, 0), min(self.left + self.content_width, self.width),
                min(self.top + self.content_height, self.height))


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; valid choices: {', '.join(FITS)}")
    return fit


def place(frame_hw: tuple[int, int], width: int, height: int, fit: str = "pad") -> Placement:
    """pad: the whole frame, centred, the rest background; crop: the canvas filled, centred, the
    overflow cut; stretch: the frame resized to the canvas (MagicAnimate's own resize)."""
    check_fit(fit)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    frame_h, frame_w = frame_hw
    if fit == "stretch":
        return Placement(width, height, 0, 0, width, height)
    pick = min if fit == "pad" else max
    scale = pick(width / frame_w, height / frame_h)
    content_w, content_h = max(1, round(frame_w * scale)), max(1, round(frame_h * scale))
    return Placement(width, height, (width - content_w) // 2, (height - content_h) // 2, content_w, content_h)


def fit_images(images: np.ndarray, width: int, height: int, fit: str = "pad") -> np.ndarray:
    """Ready-made DensePose renders (e.g. comfyui_controlnet_aux's DensePose Estimator output, RGB uint8
    [F, H, W, 3]) as control images of ``width`` x ``height``: resized with nearest-neighbour sampling
    (the part colours stay exact), padding in the background colour."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"DensePose images must be RGB uint8 [frames, height, width, 3], got dtype {images.dtype} "
                         f"shape {images.shape}")
    placement = place(images.shape[1:3], width, height, fit)
    x0, y0, x1, y1 = placement.visible()
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    out[:] = part_colors()[0]
    for source, target in zip(images, out):
        resized = source
        if source.shape[:2] != (placement.content_height, placement.content_width):
            resized = cv2.resize(source, (placement.content_width, placement.content_height),
                                 interpolation=cv2.INTER_NEAREST)
        target[y0:y1, x0:x1] = resized[y0 - placement.top:y1 - placement.top, x0 - placement.left:x1 - placement.left]
    return out


# ---------------------------------------------------------------------------------------
# model file


def locate_model(filename: str, folders: Sequence[str | os.PathLike]) -> Path:
    """The first ``folder/filename`` (or ``folder/LayerNorm/DensePose-TorchScript-with-hint-image/filename``,
    comfyui_controlnet_aux's layout) that exists; FileNotFoundError naming the file, the folders and the URL."""
    folders = [Path(f) for f in folders]
    for folder in folders:
        for candidate in (folder / filename, folder / HF_REPO / filename):
            if candidate.is_file():
                return candidate
    where = ", ".join(str(f) for f in folders) or "(no folder given)"
    url = DOWNLOAD_URLS.get(filename, f"https://huggingface.co/{HF_REPO}")
    raise FileNotFoundError(f"DensePose model file {filename!r} not found in {where}. Download it from {url} "
                            f"and put it in {folders[0] if folders else 'your models folder'}.")


def load_module(path: str | os.PathLike, device="cpu", dtype=None):
    """The TorchScript module in ``path`` (``torch.jit.load``: code and tensors, no pickled Python
    objects), on ``device``, in eval mode, its floating-point tensors in ``dtype`` when given."""
    import torch

    path = Path(path)
    url = DOWNLOAD_URLS.get(path.name, f"https://huggingface.co/{HF_REPO}")
    if not path.is_file():
        raise FileNotFoundError(f"DensePose model file {path.name!r} not found in {path.parent}. Download it from "
                                f"{url} and put it there.")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=torch.device(device))
    except RuntimeError as error:
        raise ValueError(f"{path.name} in {path.parent} is not a TorchScript model (truncated or another format: "
                         f"{' '.join(str(error).split())[:200]}). Download it again from {url}.") from error
    module.eval()
    return module.to(dtype) if dtype is not None else module


def model_input(image_rgb: np.ndarray, resolution: int = DETECT_RESOLUTION) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame as the model sees it: short side ``resolution`` (cubic when enlarging, area when
    shrinking), edge-padded to multiples of 64; returns it (RGB uint8 [H, W, 3]) and the resized
    (unpadded) height and width."""
    height, width = image_rgb.shape[:2]
    k = resolution / min(height, width)
    target_h, target_w = int(np.round(height * k)), int(np.round(width * k))
    resized = cv2.resize(image_rgb, (target_w, target_h), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    pad_h, pad_w = -target_h % PAD_MULTIPLE, -target_w % PAD_MULTIPLE
    return np.pad(resized, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge"), (target_h, target_w)


def check_outputs(outputs, name: str = "the DensePose model"):
    """(boxes [N, 4], coarse [N, C, h, w], fine [N, 25, h, w], u, v) as float32, or ValueError."""
    import torch

    shapes = [tuple(o.shape) for o in outputs] if isinstance(outputs, (tuple, list)) else type(outputs).__name__
    ok = isinstance(outputs, (tuple, list)) and len(outputs) == 5 and all(isinstance(o, torch.Tensor) for o in outputs)
    if ok:
        boxes, coarse, fine, u, v = outputs
        n = boxes.shape[0]
        ok = (boxes.ndim == 2 and boxes.shape[1] == 4 and coarse.ndim == fine.ndim == u.ndim == v.ndim == 4
              and fine.shape[1] == PARTS + 1 and coarse.shape[1] >= 2
              and all(t.shape[0] == n for t in (coarse, fine, u, v)))
    if not ok:
        raise ValueError(f"{name} is not a DensePose chart model: expected boxes [N, 4], coarse segmentation "
                         f"[N, 2, 112, 112], fine segmentation, U and V [N, 25, 112, 112]; got {shapes}")
    return tuple(o.float() for o in outputs)


def paint_parts(labels, boxes, coarse, fine, scale: tuple[float, float], offset: tuple[float, float],
                clip: tuple[int, int, int, int]) -> int:
    """Draw each person's part indices into ``labels`` (a uint8 [H, W] tensor) in order, where I > 0.
    ``boxes`` are mapped by ``box * scale + offset`` into ``labels``; nothing is drawn outside ``clip``
    (x0, y0, x1, y1). Returns how many people were drawn."""
    import torch
    import torch.nn.functional as F

    if not len(boxes):
        return 0
    sx, sy = scale
    ox, oy = offset
    factors = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)
    shifts = torch.tensor([ox, oy, ox, oy], dtype=torch.float32, device=boxes.device)
    mapped = boxes * factors + shifts
    mapped[:, 2:] -= mapped[:, :2]
    cx0, cy0, cx1, cy1 = clip
    # channels-last: the argmax over channels reads contiguous memory (twice as fast, same result)
    coarse, fine = (t.contiguous(memory_format=torch.channels_last) for t in (coarse, fine))
    drawn = 0
    for i, (x, y, w, h) in enumerate(mapped.long().tolist()):
        if w <= 0 or h <= 0:
            continue
        body = F.interpolate(coarse[i:i + 1], (h, w), mode="bilinear", align_corners=False).argmax(dim=1)[0] > 0
        parts = F.interpolate(fine[i:i + 1], (h, w), mode="bilinear", align_corners=False).argmax(dim=1)[0]
        parts = parts * body
        x0, y0, x1, y1 = max(x, cx0), max(y, cy0), min(x + w, cx1), min(y + h, cy1)
        if x0 >= x1 or y0 >= y1:
            continue
        patch = parts[y0 - y:y1 - y, x0 - x:x1 - x]
        region = labels[y0:y1, x0:x1]
        region[patch > 0] = patch[patch > 0].to(labels.dtype)
        drawn += 1
    return drawn


def _check_image(image, index: int | None = None) -> np.ndarray:
    what = "image" if index is None else f"image {index}"
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"{what} must be RGB uint8 [height, width, 3], got dtype {image.dtype} shape {image.shape}; "
                         "convert ComfyUI IMAGE tensors with (image * 255).round().clamp(0, 255).byte()")
    return image


def check_resolution(resolution: int) -> int:
    if not isinstance(resolution, (int, np.integer)) or resolution < PAD_MULTIPLE:
        raise ValueError(f"detection resolution must be an integer of at least {PAD_MULTIPLE}, got {resolution!r}")
    return int(resolution)


# ---------------------------------------------------------------------------------------
# the extractor


class DensePose:
    """DensePose renders: RGB uint8 frames in, MagicAnimate control images (RGB uint8) out."""

    def __init__(self, module, device="cpu", dtype=None, name: str = MODEL_FILE):
        self.module, self.name = module, name
        self.device, self.dtype = device, dtype

    @classmethod
    def from_file(cls, path: str | os.PathLike, device="cpu", dtype=None) -> "DensePose":
        return cls(load_module(path, device, dtype), device, dtype, Path(path).name)

    def to(self, device=None, dtype=None) -> "DensePose":
        """Move the network (and later inputs) to ``device`` / ``dtype``."""
        if device is not None:
            self.module.to(device)
            self.device = device
        if dtype is not None:
            self.module.to(dtype)
            self.dtype = dtype
        return self

    def predict(self, image_rgb: np.ndarray, resolution: int = DETECT_RESOLUTION):
        """Raw outputs (float32, on the device) for one frame, and the model input's unpadded (h, w)."""
        import torch

        padded, size = model_input(_check_image(image_rgb), check_resolution(resolution))
        tensor = torch.from_numpy(padded).to(self.device).permute(2, 0, 1).contiguous()
        try:
            with torch.inference_mode():
                outputs = self.module(tensor)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            raise ValueError(f"{self.name} failed on a uint8 image of shape {tuple(tensor.shape)} "
                             f"({' '.join(str(error).split())[:200]}); is it a DensePose TorchScript such as "
                             f"{MODEL_FILE}?") from error
        return check_outputs(outputs, self.name), size

    def render_labels(self, image_rgb: np.ndarray, width: int, height: int, fit: str = "pad",
                      resolution: int = DETECT_RESOLUTION):
        """Part indices uint8 [height, width] of one frame and the number of people drawn."""
        import torch

        image = _check_image(image_rgb)
        placement = place(image.shape[:2], width, height, fit)
        (boxes, coarse, fine, _, _), (det_h, det_w) = self.predict(image, resolution)
        labels = torch.zeros((height, width), dtype=torch.uint8, device=boxes.device)
        with torch.inference_mode():
            people = paint_parts(labels, boxes, coarse, fine,
                                 (placement.content_width / det_w, placement.content_height / det_h),
                                 (placement.left, placement.top), placement.visible())
        return labels.cpu().numpy(), people

    def render(self, image_rgb: np.ndarray, width: int, height: int, fit: str = "pad",
               resolution: int = DETECT_RESOLUTION) -> tuple[np.ndarray, int]:
        """One control image, RGB uint8 [height, width, 3], and the number of people drawn."""
        labels, people = self.render_labels(image_rgb, width, height, fit, resolution)
        return colorize(labels), people

    def extract(self, images: Iterable[np.ndarray], width: int, height: int, fit: str = "pad",
                resolution: int = DETECT_RESOLUTION,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Control images RGB uint8 [F, height, width, 3]; frames with nobody are background and
        counted in one warning. ``images``: a [F, H, W, 3] uint8 array or a sequence of RGB uint8
        images; ``progress(done, total)`` runs after each frame (an exception raised there, such as
        an interrupt, stops the extraction)."""
        check_fit(fit)
        check_resolution(resolution)
        images = images if isinstance(images, np.ndarray) else list(images)
        total = len(images)
        out = np.empty((total, height, width, 3), dtype=np.uint8)
        empty = []
        for index, image in enumerate(images):
            out[index], people = self.render(_check_image(image, index), width, height, fit, resolution)
            if not people:
                empty.append(index)
            if progress is not None:
                progress(index + 1, total)
        if empty:
            shown = ", ".join(str(i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
            log.warning("DensePose found nobody in %d of %d frames (frames %s); those frames are background",
                        len(empty), total, shown)
        return out

    __call__ = extract


_cache_lock = threading.Lock()
_cached: tuple[tuple, DensePose] | None = None


def get_densepose(path: str | os.PathLike, device="cpu", dtype=None) -> DensePose:
    """A DensePose for this file, kept while the same file (path and modification time) is asked for
    and moved to ``device`` / ``dtype``; one model is kept at a time."""
    global _cached
    path = Path(path)
    if not path.is_file():
        load_module(path)  # raises the missing-file error
    path = path.resolve()
    key = (str(path), path.stat().st_mtime_ns)
    with _cache_lock:
        if _cached is None or _cached[0] != key:
            _cached = None
            _cached = (key, DensePose.from_file(path, device, dtype))
        return _cached[1].to(device, dtype)


def release_densepose() -> None:
    """Drop the cached model (and the memory it holds)."""
    global _cached
    with _cache_lock:
        _cached = None
