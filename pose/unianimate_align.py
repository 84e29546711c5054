"""UniAnimate's pose alignment (its ``run_align_pose.py``), as a retargeting method.

Everything happens in coordinates divided by each frame's canvas size, as the reference does:

1. One driving frame (the first unless told) is compared with the character. The whole
   driving sequence is scaled about the canvas origin by ``x_ratio`` (the character's
   shoulder width over the driving's, signed: a driving person facing the other way is
   mirrored) and ``y_ratio`` (the vertical distance from the shoulders' midpoint to the hips'
   midpoint, character over driving).
2. Fifteen bones (neck-nose, neck-shoulders, the arms, nose-eyes, eyes-ears, the legs from the
   hips down; not the torso) are each stretched about their parent by the ratio of the
   character's length to the scaled reference frame's, in the reference's order; the points
   below a bone move with its child, hands with their wrists, feet with their ankles. The
   ratios measured on that one frame are used for every frame. The face is only scaled and
   moved with the whole (it does not follow the head bones; UniAnimate does not draw it).
3. Everything is translated so that the reference frame's neck lands on the character's.

Where the reference computes with a missing point as if it were at (-1, -1), this module
leaves the bone alone: a bone missing in the character or the reference frame keeps ratio 1,
and a bone with a missing end in some frame is not stretched in that frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .keypoints import (
    L_ANKLE, L_EAR, L_ELBOW, L_EYE, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NECK, NOSE, R_ANKLE,
    R_EAR, R_ELBOW, R_EYE, R_HIP, R_KNEE, R_SHOULDER, R_WRIST, Person, PoseFrame, present_mask,
)

_LEFT_FOOT, _RIGHT_FOOT = slice(0, 3), slice(3, 6)

# (parent, child, body points moved, hand moved, foot moved), in the reference's order
BONES = (
    (NECK, NOSE, (NOSE, R_EYE, L_EYE, R_EAR, L_EAR), None, None),
    (NECK, R_SHOULDER, (R_SHOULDER, R_ELBOW, R_WRIST), "right_hand", None),
    (NECK, L_SHOULDER, (L_SHOULDER, L_ELBOW, L_WRIST), "left_hand", None),
    (R_SHOULDER, R_ELBOW, (R_ELBOW, R_WRIST), "right_hand", None),
    (R_ELBOW, R_WRIST, (R_WRIST,), "right_hand", None),
    (L_SHOULDER, L_ELBOW, (L_ELBOW, L_WRIST), "left_hand", None),
    (L_ELBOW, L_WRIST, (L_WRIST,), "left_hand", None),
    (NOSE, R_EYE, (R_EYE, R_EAR), None, None),
    (NOSE, L_EYE, (L_EYE, L_EAR), None, None),
    (R_EYE, R_EAR, (R_EAR,), None, None),
    (L_EYE, L_EAR, (L_EAR,), None, None),
    (R_HIP, R_KNEE, (R_KNEE, R_ANKLE), None, _RIGHT_FOOT),
    (R_KNEE, R_ANKLE, (R_ANKLE,), None, _RIGHT_FOOT),
    (L_HIP, L_KNEE, (L_KNEE, L_ANKLE), None, _LEFT_FOOT),
    (L_KNEE, L_ANKLE, (L_ANKLE,), None, _LEFT_FOOT),
)
_TORSO = (R_SHOULDER, L_SHOULDER, R_HIP, L_HIP)


@dataclass(frozen=True)
class Alignment:
    """What UniAnimate's alignment measures on one driving frame, in canvas fractions."""

    x_ratio: float
    y_ratio: float
    bone_ratios: np.ndarray  # one per entry of BONES; 1 where the bone is not measured
    offset: np.ndarray  # added after scaling and stretching


def _normalised(person: Person, frame: PoseFrame) -> dict[str, np.ndarray]:
    size = np.array([float(frame.width), float(frame.height)])
    parts = {}
    for name in ("body", "face", "left_hand", "right_hand", "feet"):
        points = person.part(name).copy()
        points[:, :2] = points[:, :2] / size
        parts[name] = points
    return parts


def _length(body: np.ndarray, a: int, b: int) -> float:
    return float(((body[a, 0] - body[b, 0]) ** 2 + (body[a, 1] - body[b, 1]) ** 2) ** 0.5)


def _stretch_bone(parts: dict[str, np.ndarray], bone: int, ratio: float) -> None:
    parent, child, moved, hand, foot = BONES[bone]
    body = parts["body"]
    offset = (body[parent, :2] - body[child, :2]) * (1.0 - ratio)
    body[list(moved), :2] += offset
    if hand is not None:
        parts[hand][:, :2] += offset
    if foot is not None:
        parts["feet"][foot, :2] += offset


def _stretch(parts: dict[str, np.ndarray], ratios: np.ndarray) -> None:
    """Stretch every bone whose two ends are present, in place."""
    present = present_mask(parts["body"])
    for bone, (parent, child, *_) in enumerate(BONES):
        if present[parent] and present[child]:
            _stretch_bone(parts, bone, float(ratios[bone]))


def _torso_height(body: np.ndarray) -> float:
    """Vertical distance from the shoulders' midpoint to the hips' midpoint."""
    return 0.5 * (body[R_HIP, 1] + body[L_HIP, 1]) - 0.5 * (body[R_SHOULDER, 1] + body[L_SHOULDER, 1])


def _scale(parts: dict[str, np.ndarray], x_ratio: float, y_ratio: float) -> None:
    for points in parts.values():
        points[:, 0] *= x_ratio
        points[:, 1] *= y_ratio


def estimate_alignment(character: Person, character_frame: PoseFrame, reference: Person,
                       reference_frame: PoseFrame) -> Alignment:
    """The scale, bone ratios and offset UniAnimate derives from one driving frame."""
    ref = _normalised(character, character_frame)
    zero = _normalised(reference, reference_frame)
    for name, parts in (("character pose", ref), ("reference driving frame", zero)):
        missing = [i for i in _TORSO if not present_mask(parts["body"])[i]]
        if missing:
            raise ValueError(
                f"UniAnimate alignment needs both shoulders and both hips in the {name} (missing body "
                f"points {missing}); use the 'bones' method, which copes with missing points"
            )
    r_body, z_body = ref["body"], zero["body"]
    shoulders = z_body[L_SHOULDER, 0] - z_body[R_SHOULDER, 0]
    torso = _torso_height(z_body)
    if shoulders == 0 or torso == 0:
        raise ValueError("UniAnimate alignment cannot scale by the reference driving frame: its shoulders "
                         "are level in x or its hips level with its shoulders; pick another reference frame "
                         "or use the 'bones' method")
    x_ratio = float((r_body[L_SHOULDER, 0] - r_body[R_SHOULDER, 0]) / shoulders)
    y_ratio = float(_torso_height(r_body) / torso)

    _scale(zero, x_ratio, y_ratio)
    r_present, z_present = present_mask(r_body), present_mask(z_body)
    ratios = np.ones(len(BONES))
    for bone, (parent, child, *_) in enumerate(BONES):  # measured bone by bone as the frame is stretched
        if r_present[[parent, child]].all() and z_present[[parent, child]].all():
            driving_length = _length(z_body, parent, child)
            if driving_length > 0:
                ratios[bone] = _length(r_body, parent, child) / driving_length
            _stretch_bone(zero, bone, float(ratios[bone]))
    offset = r_body[NECK, :2] - z_body[NECK, :2]
    return Alignment(x_ratio, y_ratio, ratios, offset)


def align_person(person: Person, frame: PoseFrame, alignment: Alignment, character_frame: PoseFrame) -> Person:
    """One driving person aligned, in the character's canvas pixels."""
    parts = _normalised(person, frame)
    _scale(parts, alignment.x_ratio, alignment.y_ratio)
    _stretch(parts, alignment.bone_ratios)
    size = np.array([float(character_frame.width), float(character_frame.height)])
    for points in parts.values():
        points[:, :2] = (points[:, :2] + alignment.offset) * size
    return Person(**parts)


def align(driving: Sequence[PoseFrame], character: PoseFrame, reference_frame: int | None = None) -> list[PoseFrame]:
    """Driving frames aligned to the character's first person the way UniAnimate does it, on the
    character's canvas; ``reference_frame`` (default 0, the reference's choice) is the frame
    whose measurements are used."""
    driving = list(driving)
    index = 0 if reference_frame is None else reference_frame
    if not 0 <= index < len(driving):
        raise ValueError(f"reference_frame {index} is outside the driving sequence (0..{len(driving) - 1})")
    if not character.people:
        raise ValueError("the character pose has nobody in it; check the character image or its pose extraction")
    if not driving[index].people:
        raise ValueError(f"driving frame {index} has nobody in it; UniAnimate alignment measures the scale on it, "
                         "so pick another reference_frame")
    alignment = estimate_alignment(character.people[0], character, driving[index].people[0], driving[index])
    return [
        PoseFrame([align_person(p, frame, alignment, character) for p in frame.people],
                  character.width, character.height)
        for frame in driving
    ]
