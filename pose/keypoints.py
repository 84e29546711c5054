"""Keypoint types, the COCO-WholeBody -> OpenPose mapping and the POSE_KEYPOINT exchange format.

A person is four numpy arrays of shape [N, 3] holding (x, y, confidence) in pixels of the
frame's canvas: 18 OpenPose body points, 68 face points and 21 points per hand. A missing
point has confidence 0 and NaN coordinates, so that arithmetic on it cannot pass for a
position.

POSE_KEYPOINT is the list of OpenPose-JSON frames that comfyui_controlnet_aux's DWPose and
OpenPose nodes return: pixel coordinates (its OpenPose node writes them normalised to
[0, 1]; both are read), a missing point written as ``0, 0, 0``, a missing face or hand
written as ``None``, the body always present with 18 points, the face with 70 points (the
68 landmarks plus the two pupils, copied from the body's eyes). Its reader counts a point as
present only when its confidence is at least 1, so by default present points are written
with confidence 1.0 and the real confidences go alongside in an extra per-person key that
other readers ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

N_BODY = 18
N_FACE = 68
N_HAND = 21
N_WHOLEBODY = 133
CONFIDENCE_THRESHOLD = 0.3
MAX_CANVAS = 1 << 16
MAX_CANVASES_AWAY = 10  # a keypoint further from the canvas than this many canvas sizes is an error

BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)
NOSE, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST = 2, 3, 4
L_SHOULDER, L_ELBOW, L_WRIST = 5, 6, 7
R_HIP, R_KNEE, R_ANKLE = 8, 9, 10
L_HIP, L_KNEE, L_ANKLE = 11, 12, 13
R_EYE, L_EYE, R_EAR, L_EAR = 14, 15, 16, 17

# COCO-WholeBody index of each OpenPose body point; -1 is the neck, built from the shoulders.
_COCO_FOR_OPENPOSE = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_COCO_LEFT_SHOULDER, _COCO_RIGHT_SHOULDER = 5, 6
_COCO_FACE = slice(23, 91)
_COCO_LEFT_HAND = slice(91, 112)
_COCO_RIGHT_HAND = slice(112, 133)

PARTS = ("body", "face", "left_hand", "right_hand")
PART_SIZES = {"body": N_BODY, "face": N_FACE, "left_hand": N_HAND, "right_hand": N_HAND}
JSON_KEYS = {
    "body": "pose_keypoints_2d",
    "face": "face_keypoints_2d",
    "left_hand": "hand_left_keypoints_2d",
    "right_hand": "hand_right_keypoints_2d",
}
CONFIDENCE_KEY = "poseanimate_confidence"
_CONFIDENCE_MODES = ("binary", "real")


def missing_points(n: int) -> np.ndarray:
    """[n, 3] array of missing points (NaN coordinates, confidence 0)."""
    points = np.full((n, 3), np.nan)
    points[:, 2] = 0.0
    return points


def present_mask(points: np.ndarray) -> np.ndarray:
    """Boolean [n]: which points are present (confidence > 0 and finite coordinates)."""
    return (points[:, 2] > 0) & np.isfinite(points[:, 0]) & np.isfinite(points[:, 1])


def _clean(points: np.ndarray, n: int, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (n, 3):
        raise ValueError(f"{name} must have shape ({n}, 3) (x, y, confidence), got {points.shape}")
    points = points.copy()
    points[~present_mask(points)] = (np.nan, np.nan, 0.0)
    return points


@dataclass
class Person:
    """One person's keypoints in canvas pixels: arrays [N, 3] of (x, y, confidence)."""

    body: np.ndarray = field(default_factory=lambda: missing_points(N_BODY))
    face: np.ndarray = field(default_factory=lambda: missing_points(N_FACE))
    left_hand: np.ndarray = field(default_factory=lambda: missing_points(N_HAND))
    right_hand: np.ndarray = field(default_factory=lambda: missing_points(N_HAND))

    def __post_init__(self) -> None:
        for part in PARTS:
            setattr(self, part, _clean(getattr(self, part), PART_SIZES[part], part))

    def part(self, name: str) -> np.ndarray:
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; valid parts: {', '.join(PARTS)}")
        return getattr(self, name)

    def present(self, name: str) -> np.ndarray:
        return present_mask(self.part(name))

    def is_empty(self) -> bool:
        return not any(self.present(part).any() for part in PARTS)

    def copy(self) -> "Person":
        return Person(**{part: getattr(self, part).copy() for part in PARTS})

    def map_xy(self, fn) -> "Person":
        """New person with ``fn`` ([n, 2] -> [n, 2]) applied to every part's coordinates."""
        parts = {}
        for part in PARTS:
            points = getattr(self, part).copy()
            points[:, :2] = fn(points[:, :2])
            parts[part] = points
        return Person(**parts)

    def body_score(self) -> float:
        """Mean body confidence over all 18 points (missing count as 0)."""
        return float(self.body[:, 2].mean())


@dataclass
class PoseFrame:
    """The people found in one frame and the size of the canvas their pixels refer to."""

    people: list[Person]
    width: int
    height: int

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"canvas size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)
        self.people = list(self.people)

    def copy(self) -> "PoseFrame":
        return PoseFrame([p.copy() for p in self.people], self.width, self.height)

    def scaled_to(self, width: int, height: int) -> "PoseFrame":
        """The same poses on a canvas of another size (coordinates scaled per axis)."""
        factor = np.array([width / self.width, height / self.height])
        return PoseFrame([p.map_xy(lambda xy: xy * factor) for p in self.people], width, height)


def person_from_wholebody(
    keypoints: np.ndarray, scores: np.ndarray, threshold: float = CONFIDENCE_THRESHOLD
) -> Person:
    """133 COCO-WholeBody points ([133, 2] pixels, [133] scores) -> OpenPose person.

    Points scoring below ``threshold`` are missing; the neck is the shoulders' midpoint with
    the lower of their two scores, present only when both shoulders are.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if keypoints.shape != (N_WHOLEBODY, 2) or scores.shape != (N_WHOLEBODY,):
        raise ValueError(
            f"expected COCO-WholeBody keypoints [133, 2] and scores [133], "
            f"got {keypoints.shape} and {scores.shape}"
        )
    points = np.concatenate([keypoints, scores[:, None]], axis=1)
    points[scores < threshold] = (np.nan, np.nan, 0.0)

    body = missing_points(N_BODY)
    for op_index, coco_index in enumerate(_COCO_FOR_OPENPOSE):
        if coco_index >= 0:
            body[op_index] = points[coco_index]
    shoulders = points[[_COCO_LEFT_SHOULDER, _COCO_RIGHT_SHOULDER]]
    if (shoulders[:, 2] > 0).all():
        body[NECK] = (*shoulders[:, :2].mean(axis=0), shoulders[:, 2].min())

    return Person(
        body=body,
        face=points[_COCO_FACE],
        left_hand=points[_COCO_LEFT_HAND],
        right_hand=points[_COCO_RIGHT_HAND],
    )


# ---------------------------------------------------------------------------------------
# POSE_KEYPOINT


def _flatten(points: np.ndarray, confidence: str) -> list[float]:
    present = present_mask(points)
    values: list[float] = []
    for (x, y, c), ok in zip(points, present):
        if not ok:
            values += [0.0, 0.0, 0.0]
        else:
            values += [float(x), float(y), 1.0 if confidence == "binary" else float(c)]
    return values


def person_to_dict(person: Person, confidence: str = "binary") -> dict[str, Any]:
    """One person as an OpenPose-JSON ``people`` entry (see the module docstring)."""
    if confidence not in _CONFIDENCE_MODES:
        raise ValueError(
            f"unknown confidence mode {confidence!r}; valid choices: {', '.join(_CONFIDENCE_MODES)}"
        )
    entry: dict[str, Any] = {JSON_KEYS["body"]: _flatten(person.body, confidence)}
    face = np.concatenate([person.face, person.body[[R_EYE, L_EYE]]])
    entry[JSON_KEYS["face"]] = _flatten(face, confidence) if person.present("face").any() else None
    for hand in ("left_hand", "right_hand"):
        points = person.part(hand)
        entry[JSON_KEYS[hand]] = _flatten(points, confidence) if person.present(hand).any() else None
    if confidence == "binary":
        entry[CONFIDENCE_KEY] = {
            part: [float(c) for c in person.part(part)[:, 2]]
            for part in PARTS
            if person.present(part).any()
        }
    return entry


def frame_to_dict(frame: PoseFrame, confidence: str = "binary") -> dict[str, Any]:
    return {
        "people": [person_to_dict(p, confidence) for p in frame.people],
        "canvas_width": frame.width,
        "canvas_height": frame.height,
    }


def to_pose_keypoint(frames: Iterable[PoseFrame], confidence: str = "binary") -> list[dict[str, Any]]:
    """Frames -> POSE_KEYPOINT (a list of OpenPose-JSON dicts, one per frame).

    ``confidence="binary"`` writes 1.0 for present points, as controlnet_aux does and as its
    reader requires, with the real confidences under the extra key ``poseanimate_confidence``;
    ``"real"`` writes the real confidences in place (OpenPose's own convention).
    """
    return [frame_to_dict(f, confidence) for f in frames]


def _unflatten(values: Sequence[float] | None, n: int, what: str) -> np.ndarray:
    if values is None or (isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and not len(values)):
        return missing_points(n)
    try:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of numbers (x, y, confidence, ...), "
                         f"got {str(values)[:40]!r}") from None
    if flat.size % 3:
        raise ValueError(f"{what} has {flat.size} numbers, not a multiple of 3 (x, y, confidence)")
    points = flat.reshape(-1, 3)
    if len(points) < n:
        points = np.concatenate([points, missing_points(n - len(points))])
    return points[:n].copy()


def _is_normalised(parts: list[np.ndarray]) -> bool:
    present = [p[present_mask(p), :2] for p in parts]
    coords = np.concatenate(present) if present else np.zeros((0, 2))
    return coords.size > 0 and bool(((coords >= 0) & (coords <= 1)).all())


def person_from_dict(entry: Mapping[str, Any], what: str = "person") -> Person:
    """An OpenPose-JSON ``people`` entry -> Person (pixel coordinates as stored)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{what} must be a dict with {', '.join(JSON_KEYS.values())}, got {type(entry).__name__}")
    parts = {
        part: _unflatten(entry.get(key), PART_SIZES[part], f"{what}.{key}")
        for part, key in JSON_KEYS.items()
    }
    scores = entry.get(CONFIDENCE_KEY) or {}
    if not isinstance(scores, Mapping):
        raise ValueError(f"{what}.{CONFIDENCE_KEY} must be a dict of per-part confidences, got {type(scores).__name__}")
    for part, values in scores.items():
        if part in parts:
            try:
                confidences = np.asarray(values, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{what}.{CONFIDENCE_KEY}.{part} must be a list of numbers") from None
            if len(confidences) == PART_SIZES[part]:
                present = present_mask(parts[part])
                parts[part][present, 2] = confidences[present]
    return Person(**parts)


def frame_from_dict(data: Mapping[str, Any], what: str = "frame") -> PoseFrame:
    """One OpenPose-JSON frame -> PoseFrame; normalised coordinates are scaled to the canvas."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a dict with 'people', 'canvas_width', 'canvas_height', got {type(data).__name__}")
    for key in ("canvas_width", "canvas_height"):
        if key not in data:
            raise ValueError(
                f"{what} has no {key!r}; POSE_KEYPOINT frames carry the canvas size "
                "(comfyui_controlnet_aux writes canvas_width and canvas_height)"
            )
    width, height = (_canvas_size(data[key], f"{what}.{key}") for key in ("canvas_width", "canvas_height"))
    entries = data.get("people") or []
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise ValueError(f"{what}.people must be a list of people, got {type(entries).__name__}")
    people = [person_from_dict(p, f"{what}.people[{i}]") for i, p in enumerate(entries)]
    if _is_normalised([getattr(p, part) for p in people for part in PARTS]):
        factor = np.array([width, height], dtype=np.float64)
        people = [p.map_xy(lambda xy: xy * factor) for p in people]
    for i, person in enumerate(people):
        for part in PARTS:
            points = getattr(person, part)
            xy = points[present_mask(points), :2]
            far = (xy < -MAX_CANVASES_AWAY * np.array([width, height])) | \
                  (xy > (MAX_CANVASES_AWAY + 1) * np.array([width, height]))
            if far.any():
                x, y = xy[far.any(axis=1)][0]
                raise ValueError(f"{what}.people[{i}].{JSON_KEYS[part]} has a point at ({x:g}, {y:g}), far outside "
                                 f"the {width}x{height} canvas; keypoints must be pixel coordinates on the canvas "
                                 "(or 0..1 fractions of it)")
    return PoseFrame(people, width, height)


def _canvas_size(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_CANVAS or \
            value != int(value):
        raise ValueError(f"{what} is {value!r}; it must be the width or height in pixels (a whole number from 1 to "
                         f"{MAX_CANVAS}) of the image the keypoints were found in")
    return int(value)


def from_pose_keypoint(data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[PoseFrame]:
    """POSE_KEYPOINT (a list of frames, or one frame) -> list of PoseFrame."""
    if isinstance(data, Mapping):
        data = [data]
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise ValueError(f"POSE_KEYPOINT must be a list of frame dicts, got {type(data).__name__}")
    return [frame_from_dict(f, f"frame {i}") for i, f in enumerate(data)]
