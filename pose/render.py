"""Pose images in the style each PoseGuider was trained on.

Both reference implementations draw the skeleton on a black canvas whose size follows the
pose's own canvas, then resize the picture to the size the network runs at:

* ``moore`` (Moore-AnimateAnyone, ``src/dwpose``): drawn at a short side of 512 with both
  sides rounded to multiples of 64 (controlnet_aux's ``resize_image``); limbs are filled
  ellipses of half-width 4 in the OpenPose colours, dimmed x0.6, joints radius 4; hands are
  2 px lines in HSV colours with blue joints of radius 4; the face is 68 white dots of
  radius 3; RGB order. The pipeline then resizes the pose image to the generation size with
  PIL's Lanczos (diffusers' image processor); here OpenCV's area filter when shrinking and
  bicubic when enlarging stand in for it.
* ``musepose`` (MusePose, ``pose/script/util.py`` and ``draw_dwpose.py``): drawn at a short
  side of 1024 (sides floored to even numbers), then area-resized; limb and finger widths
  grow with their length (1 px under 5 px ... 8 px from 320 px); hand joints radius 3; no
  face by default; drawn in BGR and saved as RGB, so red and blue are swapped relative to
  ``moore``.
* ``unianimate`` (UniAnimate, ``dwpose/util.py`` as ``run_align_pose.py`` calls it): always
  drawn on a 512x768 canvas whatever the pose's aspect; the ``moore`` body plus two feet (the
  midpoint of each foot's two toes, joined to its ankle: colours (255, 0, 85) and
  (170, 255, 255) for the limbs, (170, 255, 255) and (255, 255, 0) for the two points), the
  ``moore`` hands, no face by default; saved by OpenCV and read back by PIL, so red and blue
  are swapped like ``musepose``; its loader then resizes with PIL's bilinear filter, which
  ``pil_bilinear_resize`` reproduces exactly. (Its JPEG round trip is not reproduced.)

Keypoints are placed through normalised coordinates (pixel / canvas size * drawing size),
exactly as the references do, so a pose drawn at its own size lands on the same pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from .keypoints import L_ANKLE, L_BIG_TOE, L_SMALL_TOE, R_ANKLE, R_BIG_TOE, R_SMALL_TOE, PoseFrame, present_mask

# OpenPose limbs as 0-based (parent, child) pairs in the references' order; both references
# draw only the first 17 (the shoulder-ear pairs at the end are never drawn).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
DRAWN_LIMBS = 17
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19),
    (19, 20),
)
# UniAnimate's two extra body points (each foot's toe midpoint) and the limbs to them
UNIANIMATE_FOOT_LIMBS = ((L_ANKLE, 18), (R_ANKLE, 19))
UNIANIMATE_COLORS = BODY_COLORS + ((170, 255, 255), (255, 255, 0))
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
LIMB_DIM = 0.6
_DIM_TABLE = (np.arange(256) * LIMB_DIM).astype(np.uint8)  # same truncation as (canvas * 0.6).astype(uint8)
_EPS = 0.01


def hsv_edge_color(index: int, count: int = len(HAND_EDGES)) -> tuple[float, float, float]:
    """Fully saturated colour at hue index/count, x255, computed like matplotlib's hsv_to_rgb."""
    h = index / float(count)
    i = int(h * 6.0)
    f = h * 6.0 - i
    q = 1.0 - f
    t = 1.0 - (1.0 - f)
    rgb = [(1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0), (1.0, 0.0, q)][i % 6]
    return tuple(float(np.float64(c) * 255) for c in rgb)


HAND_EDGE_COLORS = tuple(hsv_edge_color(i) for i in range(len(HAND_EDGES)))


def musepose_width(length: float) -> int:
    """MusePose's line width for a limb or finger segment of ``length`` pixels."""
    for limit, width in ((5, 1), (10, 2), (20, 3), (40, 4), (80, 5), (160, 6), (320, 7)):
        if length < limit:
            return width
    return 8


def _fixed_width(width: int) -> Callable[[float], int]:
    return lambda length: width


@dataclass(frozen=True)
class _Points:
    """One part of one person on the drawing canvas: float pixels, a presence mask and the
    coordinates as fractions of the pose's canvas."""

    xy: np.ndarray
    present: np.ndarray
    normalised: np.ndarray


def _to_canvas(points: np.ndarray, frame_size: tuple[int, int], draw_size: tuple[int, int]) -> _Points:
    normalised = points[:, :2] / np.array([float(frame_size[0]), float(frame_size[1])])
    return _Points(normalised * np.array([float(draw_size[0]), float(draw_size[1])]), present_mask(points),
                   normalised)


def _draw_body(canvas: np.ndarray, bodies: Sequence[_Points], limb_width: Callable[[float], int],
               joint_radius: int = 4, limbs: Sequence[tuple[int, int]] = LIMBS[:DRAWN_LIMBS],
               colors: Sequence[tuple[int, int, int]] = BODY_COLORS) -> np.ndarray:
    """OpenPose limbs as filled ellipses, dimmed, then joints as filled circles, on a black
    canvas (the body is drawn first in every reference, so only the limbs get dimmed). Limb i
    and joint i take ``colors[i]``."""
    drawn = []
    for limb, color in zip(limbs, colors):
        for body in bodies:
            if not body.present[list(limb)].all():
                continue
            xs = body.xy[list(limb), 0]
            ys = body.xy[list(limb), 1]
            mean_x, mean_y = np.mean(xs), np.mean(ys)
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly(
                (int(mean_x), int(mean_y)), (int(length / 2), limb_width(length)), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, color)
            drawn.append(polygon)
    if drawn:
        x, y, w, h = cv2.boundingRect(np.concatenate(drawn))
        region = canvas[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)]
        if region.size:  # limbs entirely off the canvas leave nothing to dim
            region[:] = cv2.LUT(region, _DIM_TABLE)
    for joint, color in enumerate(colors):
        for body in bodies:
            if body.present[joint]:
                x, y = body.xy[joint]
                cv2.circle(canvas, (int(x), int(y)), joint_radius, color, thickness=-1)
    return canvas


def _pixel(xy: np.ndarray, present: bool) -> tuple[int, int] | None:
    """Integer pixel of a present point, None for a missing one or (as in the references) one
    whose truncated coordinates are not positive."""
    if not present:
        return None
    x, y = int(xy[0]), int(xy[1])
    return (x, y) if x > _EPS and y > _EPS else None


def _draw_hands(canvas: np.ndarray, hands: Sequence[_Points], line_width: Callable[[float], int],
               joint_radius: int) -> np.ndarray:
    """Finger segments in HSV colours, then blue joints; points at pixel 0 are skipped as in the references."""
    for hand in hands:
        pixels = [_pixel(xy, present) for xy, present in zip(hand.xy, hand.present)]
        for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
            if pixels[a] is not None and pixels[b] is not None:
                (x1, y1), (x2, y2) = pixels[a], pixels[b]
                length = ((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5
                cv2.line(canvas, pixels[a], pixels[b], color, thickness=line_width(length))
        for pixel in pixels:
            if pixel is not None:
                cv2.circle(canvas, pixel, joint_radius, HAND_JOINT_COLOR, thickness=-1)
    return canvas


def _draw_face(canvas: np.ndarray, faces: Sequence[_Points], radius: int = 3) -> np.ndarray:
    for face in faces:
        for xy, present in zip(face.xy, face.present):
            pixel = _pixel(xy, present)
            if pixel is not None:
                cv2.circle(canvas, pixel, radius, FACE_COLOR, thickness=-1)
    return canvas


# ---------------------------------------------------------------------------------------
# styles


def moore_draw_size(width: int, height: int, short_side: int = 512) -> tuple[int, int]:
    """controlnet_aux ``resize_image``: short side to 512, both sides rounded to multiples of 64."""
    k = float(short_side) / min(float(width), float(height))
    return int(np.round(width * k / 64.0)) * 64, int(np.round(height * k / 64.0)) * 64


def musepose_draw_size(width: int, height: int, short_side: int = 1024) -> tuple[int, int]:
    """MusePose ``draw_dwpose``: short side to 1024, both sides floored to even numbers."""
    k = float(short_side) / min(width, height)
    return int(k * width // 2 * 2), int(k * height // 2 * 2)


def _draw_skeleton(canvas: np.ndarray, people: list[dict[str, _Points]], body: bool, hands: bool, face: bool, *,
                   limb_width: Callable[[float], int], hand_width: Callable[[float], int],
                   hand_joint_radius: int) -> np.ndarray:
    """Body, then hands, then face: the order of every reference."""
    if body:
        canvas = _draw_body(canvas, [p["body"] for p in people], limb_width, joint_radius=4)
    if hands:
        canvas = _draw_hands(canvas, [p[h] for p in people for h in ("left_hand", "right_hand")],
                            hand_width, joint_radius=hand_joint_radius)
    if face:
        canvas = _draw_face(canvas, [p["face"] for p in people], radius=3)
    return canvas


_draw_moore = functools.partial(_draw_skeleton, limb_width=_fixed_width(4), hand_width=_fixed_width(2),
                                hand_joint_radius=4)
_draw_musepose = functools.partial(_draw_skeleton, limb_width=musepose_width, hand_width=musepose_width,
                                   hand_joint_radius=3)


def unianimate_draw_size(width: int, height: int) -> tuple[int, int]:
    """UniAnimate's ``run_align_pose.py`` draws every pose on a 512x768 canvas."""
    return 512, 768


def _with_toes(body: _Points, feet: _Points, draw_size: tuple[int, int]) -> _Points:
    """The 18 body points plus each foot's toe midpoint (present when both toes are), taken
    in canvas fractions and then scaled, in UniAnimate's order of operations."""
    xy, present = [body.xy], [body.present]
    for big, small in ((L_BIG_TOE, L_SMALL_TOE), (R_BIG_TOE, R_SMALL_TOE)):
        middle = (feet.normalised[big] + feet.normalised[small]) / 2
        xy.append((middle * np.array([float(draw_size[0]), float(draw_size[1])]))[None])
        present.append(np.array([feet.present[big] and feet.present[small]]))
    return _Points(np.concatenate(xy), np.concatenate(present), np.zeros((0, 2)))


def _draw_unianimate(canvas: np.ndarray, people: list[dict[str, _Points]], body: bool, hands: bool,
                     face: bool) -> np.ndarray:
    if body:
        draw_size = (canvas.shape[1], canvas.shape[0])
        bodies = [_with_toes(p["body"], p["feet"], draw_size) for p in people]
        canvas = _draw_body(canvas, bodies, _fixed_width(4), joint_radius=4,
                            limbs=LIMBS[:DRAWN_LIMBS] + UNIANIMATE_FOOT_LIMBS, colors=UNIANIMATE_COLORS)
    return _draw_moore(canvas, people, False, hands, face)


_PIL_PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (32 - 8 - 2)


@functools.lru_cache(maxsize=16)
def _pil_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear taps for one axis: source indices and fixed-point weights [out, taps]."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale
    taps = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    index = xmin[:, None] + np.arange(taps)
    valid = index < xmax[:, None]
    k = np.where(valid, np.maximum(0.0, 1.0 - np.abs((index - center[:, None] + 0.5) * (1.0 / filterscale))), 0.0)
    total = np.zeros(out_size)
    for tap in range(taps):  # summed in order, as Pillow does (numpy's sum rounds differently)
        total = total + k[:, tap]
    k = np.where(total[:, None] != 0.0, k / np.where(total == 0.0, 1.0, total)[:, None], k)
    weight = np.trunc(0.5 + k * (1 << _PIL_PRECISION_BITS)).astype(np.int64)
    index = np.where(valid, index, 0)
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


def _pil_bilinear_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index, weight = _pil_bilinear_taps(image.shape[axis], out_size)
    source = image.astype(np.int32)  # 255 x 2^22 and the sums of the taps stay below 2^31
    shape = [1] * image.ndim
    shape[axis] = out_size
    total = np.full(image.shape[:axis] + (out_size,) + image.shape[axis + 1:], 1 << (_PIL_PRECISION_BITS - 1),
                    dtype=np.int32)
    for tap in range(index.shape[1]):
        total += np.take(source, index[:, tap], axis=axis) * weight[:, tap].astype(np.int32).reshape(shape)
    return np.clip(total >> _PIL_PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bilinear_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``PIL.Image.resize((width, height), Image.BILINEAR)`` on a uint8 [H, W, C] array, bit for
    bit: Pillow's triangle filter (widened by the scale when shrinking), 22-bit fixed-point
    weights, the horizontal pass first, rounded to 8 bits, then the vertical pass."""
    if width != image.shape[1]:
        image = _pil_bilinear_axis(image, width, axis=1)
    if height != image.shape[0]:
        image = _pil_bilinear_axis(image, height, axis=0)
    return image


def _resize_smooth(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stand-in for PIL's Lanczos (what Moore's pipeline uses): area averaging when shrinking,
    bicubic when enlarging; both stay within about 0.2 grey levels (mean) of PIL on pose images."""
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class RenderStyle:
    """How one reference draws poses: drawing size, drawing function, final resize."""

    name: str
    description: str
    draw_size: Callable[[int, int], tuple[int, int]]
    draw: Callable[[np.ndarray, list[dict[str, _Points]], bool, bool, bool], np.ndarray]
    resize: Callable[[np.ndarray, int, int], np.ndarray]
    face_default: bool
    swap_red_blue: bool = False


STYLES: dict[str, RenderStyle] = {
    "moore": RenderStyle(
        name="moore",
        description="Moore-AnimateAnyone: body, hands and face, RGB, drawn at short side 512",
        draw_size=moore_draw_size,
        draw=_draw_moore,
        resize=_resize_smooth,
        face_default=True,
    ),
    "musepose": RenderStyle(
        name="musepose",
        description="MusePose: no face, length-dependent widths, red/blue swapped, drawn at short side 1024",
        draw_size=musepose_draw_size,
        draw=_draw_musepose,
        resize=_resize_area,
        face_default=False,
        swap_red_blue=True,
    ),
    "unianimate": RenderStyle(
        name="unianimate",
        description="UniAnimate: body with feet, hands, no face, red/blue swapped, drawn at 512x768",
        draw_size=unianimate_draw_size,
        draw=_draw_unianimate,
        resize=pil_bilinear_resize,
        face_default=False,
        swap_red_blue=True,
    ),
}


def style_names() -> list[str]:
    return list(STYLES)


def get_style(name: str) -> RenderStyle:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown pose style {name!r}; valid choices: {', '.join(STYLES)}") from None


def _check_size(width: int, height: int) -> tuple[int, int]:
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"output size must be positive integers, got width={width!r}, height={height!r}")
    return int(width), int(height)


def render_frame(frame: PoseFrame, width: int | None = None, height: int | None = None,
                 style: str = "moore", body: bool = True, hands: bool = True,
                 face: bool | None = None) -> np.ndarray:
    """Draw one frame's people; returns uint8 RGB [height, width, 3] (default: the frame's canvas size).

    ``face=None`` uses the style's default (on for ``moore``, off for the others). The pose is
    stretched to the output size as the references do; retarget it first to keep proportions.
    """
    spec = get_style(style)
    width, height = _check_size(frame.width if width is None else width,
                                frame.height if height is None else height)
    draw_w, draw_h = spec.draw_size(frame.width, frame.height)
    people = [
        {part: _to_canvas(p.part(part), (frame.width, frame.height), (draw_w, draw_h))
         for part in ("body", "face", "left_hand", "right_hand", "feet")}
        for p in frame.people
    ]
    canvas = np.zeros((draw_h, draw_w, 3), dtype=np.uint8)
    canvas = spec.draw(canvas, people, body, hands, spec.face_default if face is None else face)
    if (draw_w, draw_h) != (width, height):
        canvas = spec.resize(canvas, width, height)
    if spec.swap_red_blue:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
    return canvas


def render_frames(frames: Iterable[PoseFrame], width: int, height: int, style: str = "moore",
                  body: bool = True, hands: bool = True, face: bool | None = None) -> np.ndarray:
    """Draw a sequence; returns uint8 RGB [F, height, width, 3], each frame drawn into its place."""
    get_style(style)
    width, height = _check_size(width, height)
    frames = list(frames)
    images = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        images[i] = render_frame(frame, width, height, style, body, hands, face)
    return images
