"""Retargeting: a driving pose sequence redrawn with the character's proportions.

Every body point is rebuilt along the OpenPose kinematic tree from the neck: its offset from
its parent in the driving frame is scaled by that bone's length ratio (character / driving)
and added to the parent's new position, so directions come from the driving and lengths
from the character. Bone lengths of the driving are medians over all frames where both ends
are present (missing points are masked, so an occluded frame cannot shorten a bone); the
character's are measured on its single pose. Left and right bones share the larger of their
two ratios. Hands follow their wrist, feet their ankle and the face its nose rigidly:
translated with it and scaled by the forearm, lower leg and head (nose-eye) ratios.

Where a ratio cannot be measured (the bone is missing in the character or never seen in the
driving) the mirror bone's ratio is used; failing that, the ratio of the nearest measured
bone up the tree towards the neck; failing that (a bone straight off the neck), the overall
scale, i.e. total character length / total driving length over the bones measured in both.

A driving point whose parent is missing in that frame hangs off its nearest present ancestor,
scaled by the length-weighted ratio of the bones in between. A frame without a neck is
mapped as a whole by the overall scale about the centroid of its body points.

Placement: ``"neck"`` puts the reference driving frame's neck (the first frame that has one,
unless told) on the character's neck and moves the neck through the video by the driving's
motion times the overall scale; ``"driving"`` keeps the driving's neck where it was in the
frame (in canvas-relative coordinates). The output frames have the character's canvas size.

``method="unianimate"`` instead aligns the way UniAnimate's ``run_align_pose.py`` does (see
``unianimate_align``): scale and bone ratios from one driving frame, a separate horizontal
and vertical scale, no torso bones. ``docs/unianimate-alignment.md`` compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import unianimate_align
from .keypoints import (
    L_ANKLE, L_EAR, L_ELBOW, L_EYE, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, N_BODY, NECK, NOSE,
    R_ANKLE, R_EAR, R_ELBOW, R_EYE, R_HIP, R_KNEE, R_SHOULDER, R_WRIST, Person, PoseFrame,
    missing_points, present_mask,
)

# (parent, child), parents before children.
BONES = (
    (NECK, NOSE), (NECK, R_SHOULDER), (NECK, L_SHOULDER), (NECK, R_HIP), (NECK, L_HIP),
    (R_SHOULDER, R_ELBOW), (L_SHOULDER, L_ELBOW), (R_ELBOW, R_WRIST), (L_ELBOW, L_WRIST),
    (R_HIP, R_KNEE), (L_HIP, L_KNEE), (R_KNEE, R_ANKLE), (L_KNEE, L_ANKLE),
    (NOSE, R_EYE), (NOSE, L_EYE), (R_EYE, R_EAR), (L_EYE, L_EAR),
)
BONE_INDEX = {child: i for i, (_, child) in enumerate(BONES)}
PARENT = {child: parent for parent, child in BONES}
MIRROR_PAIRS = tuple(
    (BONE_INDEX[a], BONE_INDEX[b])
    for a, b in ((R_SHOULDER, L_SHOULDER), (R_HIP, L_HIP), (R_ELBOW, L_ELBOW), (R_WRIST, L_WRIST),
                 (R_KNEE, L_KNEE), (R_ANKLE, L_ANKLE), (R_EYE, L_EYE), (R_EAR, L_EAR))
)
HAND_ATTACHMENT = {"right_hand": (R_WRIST, BONE_INDEX[R_WRIST]), "left_hand": (L_WRIST, BONE_INDEX[L_WRIST])}
FOOT_ATTACHMENT = ((slice(0, 3), L_ANKLE, BONE_INDEX[L_ANKLE]), (slice(3, 6), R_ANKLE, BONE_INDEX[R_ANKLE]))
FACE_ATTACHMENT = (NOSE, BONE_INDEX[R_EYE])
PLACEMENTS = ("neck", "driving")
METHODS = ("bones", "unianimate")


def bone_lengths(person: Person) -> np.ndarray:
    """Length of every bone in ``BONES`` [n_bones]; NaN where an end is missing."""
    body = person.body
    present = present_mask(body)
    lengths = np.full(len(BONES), np.nan)
    for i, (parent, child) in enumerate(BONES):
        if present[parent] and present[child]:
            lengths[i] = float(np.hypot(*(body[child, :2] - body[parent, :2])))
    return lengths


def median_bone_lengths(people: Sequence[Person]) -> np.ndarray:
    """Per-bone median length over the people where the bone's two ends are present."""
    if not people:
        return np.full(len(BONES), np.nan)
    lengths = np.stack([bone_lengths(p) for p in people])
    measured = np.isfinite(lengths).any(axis=0)
    result = np.full(len(BONES), np.nan)
    result[measured] = np.nanmedian(lengths[:, measured], axis=0)
    return result


@dataclass(frozen=True)
class Proportions:
    """Per-bone length ratios (character / driving) and where each came from."""

    ratios: np.ndarray
    scale: float
    sources: tuple[str, ...]
    driving_lengths: np.ndarray
    character_lengths: np.ndarray

    def ratio(self, child: int) -> float:
        return float(self.ratios[BONE_INDEX[child]])


def estimate_proportions(character: Person, driving: Sequence[Person]) -> Proportions:
    """Bone ratios from the character's pose and the driving's median bone lengths."""
    character_lengths = bone_lengths(character)
    driving_lengths = median_bone_lengths(driving)
    measured = np.isfinite(character_lengths) & np.isfinite(driving_lengths) & (driving_lengths > 0)
    if not measured.any():
        raise ValueError(
            "cannot compare the character with the driving pose: no bone (two connected "
            "keypoints) is visible in both; check that the character image shows a person"
        )
    scale = float(character_lengths[measured].sum() / driving_lengths[measured].sum())
    raw = np.where(measured, character_lengths / np.where(measured, driving_lengths, 1.0), np.nan)

    ratios = raw.copy()
    sources = ["measured" if m else "" for m in measured]
    for a, b in MIRROR_PAIRS:
        pair = raw[[a, b]]
        if np.isfinite(pair).any():
            shared = float(np.nanmax(pair))
            for i in (a, b):
                if not measured[i]:
                    sources[i] = "mirror"
                ratios[i] = shared
    for i, (parent, _) in enumerate(BONES):
        if np.isfinite(ratios[i]):
            continue
        inherited = _inherited_ratio(parent, ratios, sources)
        ratios[i] = scale if inherited is None else inherited
        sources[i] = "overall" if inherited is None else "parent"
    return Proportions(ratios, scale, tuple(sources), driving_lengths, character_lengths)


def _inherited_ratio(joint: int, ratios: np.ndarray, sources: list[str]) -> float | None:
    """Ratio of the nearest bone above ``joint`` that was measured (directly or by its mirror)."""
    while joint in PARENT:
        bone = BONE_INDEX[joint]
        if sources[bone] in ("measured", "mirror"):
            return float(ratios[bone])
        joint = PARENT[joint]
    return None


def _chain_ratio(proportions: Proportions, ancestor: int, joint: int) -> float:
    """Length-weighted ratio of the bones from ``ancestor`` down to ``joint``."""
    bones = []
    while joint != ancestor:
        bones.append(BONE_INDEX[joint])
        joint = PARENT[joint]
    ratios = proportions.ratios[bones]
    weights = proportions.driving_lengths[bones]
    if not np.isfinite(weights).all():
        weights = np.ones(len(bones))
    return float((ratios * weights).sum() / weights.sum())


def _nearest_present_ancestor(joint: int, present: np.ndarray) -> int:
    ancestor = PARENT[joint]
    while not present[ancestor]:
        ancestor = PARENT[ancestor]
    return ancestor


def _attach(points: np.ndarray, joint: int, ratio: float, body: np.ndarray, present: np.ndarray,
            new_body: np.ndarray, proportions: Proportions) -> np.ndarray:
    """Carry ``points`` (a hand or the face) rigidly with body ``joint``, scaled by ``ratio``."""
    out = points.copy()
    mask = present_mask(points)
    if not mask.any():
        return out
    if present[joint]:
        pivot, pivot_out = body[joint, :2], new_body[joint, :2]
    else:
        pivot = points[0, :2] if mask[0] else points[mask, :2].mean(axis=0)
        ancestor = _nearest_present_ancestor(joint, present)
        chain = _chain_ratio(proportions, ancestor, joint)
        pivot_out = new_body[ancestor, :2] + chain * (pivot - body[ancestor, :2])
    out[mask, :2] = pivot_out + ratio * (points[mask, :2] - pivot)
    return out


def retarget_person(person: Person, proportions: Proportions,
                    root_map: Callable[[np.ndarray], np.ndarray]) -> Person:
    """One driving person rebuilt with ``proportions``; ``root_map`` places driving points ([n, 2])
    in the output canvas and is applied to the neck (or, without a neck, the body centroid)."""
    body = person.body
    present = present_mask(body)
    if not present[NECK]:
        return _retarget_without_neck(person, proportions, root_map)
    new_body = missing_points(N_BODY)
    new_body[present, 2] = body[present, 2]
    new_body[NECK, :2] = root_map(body[NECK:NECK + 1, :2])[0]
    for parent, child in BONES:
        if not present[child]:
            continue
        if present[parent]:
            ancestor, ratio = parent, proportions.ratio(child)
        else:
            ancestor = _nearest_present_ancestor(child, present)
            ratio = _chain_ratio(proportions, ancestor, child)
        new_body[child, :2] = new_body[ancestor, :2] + ratio * (body[child, :2] - body[ancestor, :2])

    parts = {"body": new_body}
    for hand, (wrist, forearm) in HAND_ATTACHMENT.items():
        parts[hand] = _attach(person.part(hand), wrist, proportions.ratios[forearm], body, present,
                              new_body, proportions)
    nose, head = FACE_ATTACHMENT
    parts["face"] = _attach(person.face, nose, proportions.ratios[head], body, present, new_body, proportions)
    parts["feet"] = person.feet.copy()
    for foot, ankle, shin in FOOT_ATTACHMENT:
        parts["feet"][foot] = _attach(person.feet[foot], ankle, proportions.ratios[shin], body, present,
                                      new_body, proportions)
    return Person(**parts)


def _retarget_without_neck(person: Person, proportions: Proportions,
                           root_map: Callable[[np.ndarray], np.ndarray]) -> Person:
    body_present = present_mask(person.body)
    if body_present.any():
        pivot = person.body[body_present, :2].mean(axis=0)
    else:
        everything = np.concatenate([person.part(p) for p in ("face", "left_hand", "right_hand", "feet")])
        pivot = everything[present_mask(everything), :2].mean(axis=0)
    pivot_out = root_map(pivot[None])[0]
    return person.map_xy(lambda xy: pivot_out + proportions.scale * (xy - pivot))


def _first_person(frame: PoseFrame) -> Person | None:
    return frame.people[0] if frame.people else None


def retarget(driving: Sequence[PoseFrame], character: PoseFrame, placement: str = "neck",
             reference_frame: int | None = None, method: str = "bones") -> list[PoseFrame]:
    """Driving frames redrawn with the character's proportions, on the character's canvas.

    Proportions are measured on the first person of ``character`` and of each driving frame;
    every person of every frame is retargeted with them. ``reference_frame`` (``"neck"``
    placement) is the driving frame whose neck lands on the character's neck; by default the
    first frame with a neck. ``method="unianimate"`` aligns as UniAnimate does instead
    (``reference_frame``, default 0, is then the frame it measures; placement must be ``"neck"``).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid choices: {', '.join(PLACEMENTS)}")
    if method not in METHODS:
        raise ValueError(f"unknown retarget method {method!r}; valid choices: {', '.join(METHODS)}")
    if method == "unianimate":
        if placement != "neck":
            raise ValueError("retarget method 'unianimate' always puts the measured frame's neck on the "
                             "character's neck; use placement='neck' or method='bones'")
        return unianimate_align.align(driving, character, reference_frame)
    subject = _first_person(character)
    if subject is None or subject.is_empty():
        raise ValueError("the character pose has nobody in it; check the character image or its pose extraction")
    driving = list(driving)
    driving_people = [p for p in (_first_person(f) for f in driving) if p is not None]
    if not driving_people:
        return [PoseFrame([], character.width, character.height) for _ in driving]
    proportions = estimate_proportions(subject, driving_people)
    root_map = _root_map(driving, subject, character, proportions, placement, reference_frame)
    return [
        PoseFrame([retarget_person(p, proportions, root_map(i)) for p in frame.people],
                  character.width, character.height)
        for i, frame in enumerate(driving)
    ]


def _root_map(driving: list[PoseFrame], subject: Person, character: PoseFrame, proportions: Proportions,
              placement: str, reference_frame: int | None) -> Callable[[int], Callable[[np.ndarray], np.ndarray]]:
    if placement == "driving":
        def per_frame(i: int) -> Callable[[np.ndarray], np.ndarray]:
            factor = np.array([character.width / driving[i].width, character.height / driving[i].height])
            return lambda xy: xy * factor
        return per_frame

    if not subject.present("body")[NECK]:
        raise ValueError(
            "the character pose has no neck (both shoulders are needed) to anchor the driving "
            "pose on; use placement='driving'"
        )
    reference = _reference_neck(driving, reference_frame)
    anchor = subject.body[NECK, :2]
    scale = proportions.scale
    mapping = lambda xy: anchor + scale * (xy - reference)  # noqa: E731
    return lambda i: mapping


def _reference_neck(driving: list[PoseFrame], reference_frame: int | None) -> np.ndarray:
    candidates = range(len(driving)) if reference_frame is None else [reference_frame]
    if reference_frame is not None and not 0 <= reference_frame < len(driving):
        raise ValueError(f"reference_frame {reference_frame} is outside the driving sequence (0..{len(driving) - 1})")
    for i in candidates:
        person = _first_person(driving[i])
        if person is not None and person.present("body")[NECK]:
            return person.body[NECK, :2].copy()
    where = "any driving frame" if reference_frame is None else f"driving frame {reference_frame}"
    raise ValueError(f"no neck in {where} to anchor on the character's neck; use placement='driving' "
                     "or another reference_frame")
