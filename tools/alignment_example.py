"""The example in docs/unianimate-alignment.md: retarget method 'bones' (the pack's) against
'unianimate' (UniAnimate's run_align_pose.py) on a synthetic dance whose answer is known.

A driving dancer and a character with other proportions (wider shoulders, shorter legs, longer
arms) perform the same motion over 24 frames: the right arm starts pointing at the camera (seen at
40 % of its length in the first frame) and, over the first N frames, turns out to the side, where
it stays at full length while swinging up to horizontal; the left arm rises from hanging to
overhead. Because both bodies follow the same motion, the right answer for every bone in every
frame is the driving bone's 2D vector times (character's true length / driving's true length).
Prints the errors of both methods against that answer and writes docs/unianimate-alignment.png
(the last frame: driving, answer, bones, unianimate).

    python tools/alignment_example.py [N ...]     (default: 3 12)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from poseanimate.pose.keypoints import (
    L_ANKLE, L_ELBOW, L_EYE, L_EAR, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NECK, NOSE, R_ANKLE, R_EAR,
    R_ELBOW, R_EYE, R_HIP, R_KNEE, R_SHOULDER, R_WRIST, Person, PoseFrame, missing_points,
)
from poseanimate.pose.render import render_frame
from poseanimate.pose.retarget import BONES, retarget

ROOT = Path(__file__).resolve().parents[1]

FRAMES = 24
SIZE = (512, 768)


def body_lengths(shoulder, upper_arm, forearm, hip, thigh, shin, torso, neck=70.0, head=20.0):
    return dict(shoulder=shoulder, upper_arm=upper_arm, forearm=forearm, hip=hip, thigh=thigh, shin=shin,
                torso=torso, neck=neck, head=head)


DRIVER = body_lengths(shoulder=38, upper_arm=78, forearm=70, hip=24, thigh=105, shin=105, torso=160, neck=52, head=15)
CHARACTER = body_lengths(shoulder=47, upper_arm=86, forearm=79, hip=27, thigh=90, shin=86, torso=150, neck=52, head=15)


def pose(lengths, t, seen=1.0, neck=(256.0, 250.0)):
    """One frame (t in [0, 1]) of the dance for a body with ``lengths``, the right arm seen at
    ``seen`` of its length; returns [18, 2]."""
    p = np.zeros((18, 2))
    p[NECK] = neck
    p[NOSE] = p[NECK] + (0, -lengths["neck"])
    p[R_EYE], p[L_EYE] = p[NOSE] + (-lengths["head"] / 2, -12), p[NOSE] + (lengths["head"] / 2, -12)
    p[R_EAR], p[L_EAR] = p[NOSE] + (-lengths["head"], -5), p[NOSE] + (lengths["head"], -5)
    p[R_SHOULDER], p[L_SHOULDER] = p[NECK] + (-lengths["shoulder"], 0), p[NECK] + (lengths["shoulder"], 0)
    # right arm: from just past straight down to horizontal
    angle = np.radians(100 - 90 * t)  # from just past straight down to horizontal (image y points down)
    direction = np.array([-np.cos(angle), np.sin(angle)])
    p[R_ELBOW] = p[R_SHOULDER] + seen * lengths["upper_arm"] * direction
    p[R_WRIST] = p[R_ELBOW] + seen * lengths["forearm"] * direction
    # left arm: from hanging (90 degrees) to overhead (-90 degrees), always at full length
    angle = np.radians(90 - 180 * t)
    direction = np.array([np.cos(angle), np.sin(angle)])
    p[L_ELBOW] = p[L_SHOULDER] + lengths["upper_arm"] * direction
    p[L_WRIST] = p[L_ELBOW] + lengths["forearm"] * direction
    hips = p[NECK] + (0, lengths["torso"])
    p[R_HIP], p[L_HIP] = hips + (-lengths["hip"], 0), hips + (lengths["hip"], 0)
    p[R_KNEE], p[L_KNEE] = p[R_HIP] + (0, lengths["thigh"]), p[L_HIP] + (0, lengths["thigh"])
    p[R_ANKLE], p[L_ANKLE] = p[R_KNEE] + (0, lengths["shin"]), p[L_KNEE] + (0, lengths["shin"])
    return p


def frame(points):
    body = missing_points(18)
    body[:, :2], body[:, 2] = points, 1.0
    return PoseFrame([Person(body=body)], *SIZE)


def answer(driving_points):
    """Every bone of the driving frame rescaled to the character's true length, from the
    character's neck (the right output for a character doing the same dance)."""
    out = np.zeros_like(driving_points)
    character = pose(CHARACTER, 0.0)
    out[NECK] = character[NECK] + (driving_points[NECK] - pose(DRIVER, 0.0)[NECK])
    true_ratio = {}
    c, d = pose(CHARACTER, 1.0), pose(DRIVER, 1.0)  # t=1: every bone at its full length
    for parent, child in BONES:
        true_ratio[child] = np.hypot(*(c[child] - c[parent])) / np.hypot(*(d[child] - d[parent]))
    for parent, child in BONES:
        out[child] = out[parent] + true_ratio[child] * (driving_points[child] - driving_points[parent])
    return out


def errors(result, expected, driving):
    """Per bone: relative length error and direction error (degrees) against the answer."""
    length, angle = [], []
    for parent, child in BONES:
        got, want, drv = (p[child] - p[parent] for p in (result, expected, driving))
        length.append(abs(np.hypot(*got) - np.hypot(*want)) / np.hypot(*want))
        cos = np.dot(got, drv) / (np.hypot(*got) * np.hypot(*drv))
        angle.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.array(length), np.array(angle)


GROUPS = {
    "right arm (foreshortened at first)": (R_ELBOW, R_WRIST),
    "left arm (rises 180 degrees)": (L_ELBOW, L_WRIST),
    "legs": (R_KNEE, R_ANKLE, L_KNEE, L_ANKLE),
    "torso (neck to hips)": (R_HIP, L_HIP),
    "head": (NOSE, R_EYE, L_EYE, R_EAR, L_EAR),
}


def compare(foreshortened: int, picture: Path | None = None) -> None:
    times = np.linspace(0, 1, FRAMES)
    seen = [0.4 + 0.6 * min(1.0, i / foreshortened) for i in range(FRAMES)]
    driving = [frame(pose(DRIVER, t, s)) for t, s in zip(times, seen)]
    character = frame(pose(CHARACTER, 1.0))  # the character image: arms out, nothing foreshortened
    expected = [answer(pose(DRIVER, t, s)) for t, s in zip(times, seen)]
    results = {method: retarget(driving, character, method=method) for method in ("bones", "unianimate")}
    child_index = {child: i for i, (_, child) in enumerate(BONES)}
    print(f"\nright arm foreshortened in the first {foreshortened} of {FRAMES} frames")
    print(f"{'bones':<38}{'method':<12}{'length error % mean/max':>26}{'direction error deg mean/max':>32}")
    for group, children in GROUPS.items():
        for method, frames in results.items():
            lengths, angles = [], []
            for out, want, drv in zip(frames, expected, driving):
                length, angle = errors(out.people[0].body[:, :2], want, drv.people[0].body[:, :2])
                idx = [child_index[c] for c in children]
                lengths.append(length[idx])
                angles.append(angle[idx])
            lengths, angles = np.concatenate(lengths) * 100, np.concatenate(angles)
            print(f"{group:<38}{method:<12}{lengths.mean():>17.1f} / {lengths.max():<6.1f}"
                  f"{angles.mean():>23.1f} / {angles.max():<6.1f}")
    if picture is None:
        return
    last = -1
    panels = [driving[last], frame(expected[last]), results["bones"][last], results["unianimate"][last]]
    images = [render_frame(p, 256, 384, style="unianimate") for p in panels]
    for image, title in zip(images, ("driving", "answer", "bones", "unianimate")):
        cv2.putText(image, title, (8, 372), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    path, picture = picture, np.concatenate(images, axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path}")


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [3, 12]
    for i, count in enumerate(counts):
        compare(count, ROOT / "docs" / "unianimate-alignment.png" if i == 0 else None)


if __name__ == "__main__":
    main()
