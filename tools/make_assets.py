"""Draw the default inputs of ``poseanimate animate`` (made by the project, Apache-2.0 like the code):

* ``assets/character.png``: a simple cartoon figure, 512x768, drawn on its own skeleton;
* ``assets/character.json``: that skeleton as POSE_KEYPOINT (one frame), so the default run needs
  no pose detector for the character;
* ``assets/dance.json``: a 48-frame (2 s at 24 fps) dance loop as POSE_KEYPOINT on the same
  skeleton: a bounce on the beat, a sway, the arms raised in turn.

Run ``python tools/make_assets.py`` with the package installed; the output is deterministic.
"""

import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from poseanimate.pose.keypoints import Person, PoseFrame, missing_points, to_pose_keypoint

WIDTH, HEIGHT, FRAMES = 512, 768, 48
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")

# OpenPose body points of the figure at rest (the person's right is the image's left).
NECK, SHOULDER_Y, SHOULDER_DX = (256, 236), 248, 62
HIP_Y, HIP_DX, KNEE_Y, ANKLE_Y = 450, 34, 576, 700
UPPER_ARM, FOREARM = 108, 100
THIGH, SHIN = KNEE_Y - HIP_Y, ANKLE_Y - KNEE_Y


def _polar(origin, length, degrees):
    a = math.radians(degrees)
    return origin[0] + length * math.cos(a), origin[1] + length * math.sin(a)


def skeleton(arm_right=0.0, arm_left=0.0, bounce=0.0, sway=0.0, tilt=0.0):
    """The 18 body points for raised-arm amounts in [0, 1], a bounce (pixels down), a sway (pixels
    sideways) and a head tilt (degrees)."""
    neck = (NECK[0] + sway, NECK[1] + bounce)
    pts = np.zeros((18, 2))
    pts[1] = neck
    pts[2] = (neck[0] - SHOULDER_DX, SHOULDER_Y + bounce)
    pts[5] = (neck[0] + SHOULDER_DX, SHOULDER_Y + bounce)
    for shoulder, elbow, wrist, amount, mirror in ((2, 3, 4, arm_right, False), (5, 6, 7, arm_left, True)):
        upper = 108 + 92 * amount   # 108 deg: down and out; 200 deg: up and out
        lower = upper + 8 + 40 * amount
        if mirror:
            upper, lower = 180 - upper, 180 - lower
        pts[elbow] = _polar(pts[shoulder], UPPER_ARM, upper)
        pts[wrist] = _polar(pts[elbow], FOREARM, lower)
    for hip, knee, ankle, side in ((8, 9, 10, -1), (11, 12, 13, 1)):
        pts[hip] = (neck[0] + side * HIP_DX, HIP_Y + bounce)
        pts[ankle] = (NECK[0] + side * (HIP_DX + 6), ANKLE_Y)
        pts[knee] = _leg_knee(pts[hip], pts[ankle], side)
    head = _polar(neck, 64, -90 + tilt)
    pts[0] = head
    for index, (dx, dy) in zip((14, 15, 16, 17), ((-13, -12), (13, -12), (-30, -6), (30, -6))):
        a = math.radians(tilt)
        pts[index] = (head[0] + dx * math.cos(a) - dy * math.sin(a), head[1] + dx * math.sin(a) + dy * math.cos(a))
    return pts


def _leg_knee(hip, ankle, side):
    dx, dy = ankle[0] - hip[0], ankle[1] - hip[1]
    d = min(math.hypot(dx, dy), THIGH + SHIN - 1e-6)
    along = (THIGH ** 2 - SHIN ** 2 + d ** 2) / (2 * d)
    out = math.sqrt(max(THIGH ** 2 - along ** 2, 0.0))
    ux, uy = dx / d, dy / d
    # the perpendicular (uy, -ux) points to the image's right for a leg going down
    return hip[0] + along * ux + side * out * uy, hip[1] + along * uy - side * out * ux


def frame(points):
    body = missing_points(18)
    body[:, :2], body[:, 2] = np.round(points, 1), 1.0
    return PoseFrame([Person(body=body)], WIDTH, HEIGHT)


def dance():
    frames = []
    for i in range(FRAMES):
        t = 2 * math.pi * i / FRAMES
        frames.append(frame(skeleton(arm_right=(1 - math.cos(t)) / 2, arm_left=(1 + math.cos(t)) / 2,
                                     bounce=14 * (1 - math.cos(2 * t)) / 2, sway=22 * math.sin(t),
                                     tilt=8 * math.sin(t))))
    return frames


def _limb(draw, a, b, width, color):
    draw.line([tuple(a), tuple(b)], fill=color, width=width)
    for p in (a, b):
        draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2, p[1] + width / 2], fill=color)


def draw_character(pts):
    skin, shirt, trousers, shoes, hair = (236, 188, 150), (214, 64, 52), (46, 70, 128), (40, 34, 30), (92, 56, 30)
    image = Image.new("RGB", (WIDTH, HEIGHT), (226, 232, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 712, WIDTH, HEIGHT], fill=(196, 204, 214))
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        _limb(draw, pts[hip], pts[knee], 40, trousers)
        _limb(draw, pts[knee], pts[ankle], 34, trousers)
        x, y = pts[ankle]
        draw.ellipse([x - 26, y - 6, x + 26, y + 20], fill=shoes)
    draw.polygon([tuple(pts[8] + (-14, 12)), tuple(pts[11] + (14, 12)), tuple(pts[11] + (10, -20)),
                  tuple(pts[8] + (-10, -20))], fill=trousers)
    draw.polygon([tuple(pts[2] + (-6, -14)), tuple(pts[5] + (6, -14)), tuple(pts[11] + (12, -8)),
                  tuple(pts[8] + (-12, -8))], fill=shirt)
    for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
        _limb(draw, pts[shoulder], pts[elbow], 30, shirt)
        _limb(draw, pts[elbow], pts[wrist], 24, skin)
        x, y = pts[wrist]
        draw.ellipse([x - 15, y - 15, x + 15, y + 15], fill=skin)
    x, y = pts[1]
    draw.rectangle([x - 14, y - 30, x + 14, y + 4], fill=skin)
    x, y = pts[0]
    draw.ellipse([x - 46, y - 60, x + 46, y + 42], fill=skin)
    draw.chord([x - 48, y - 64, x + 48, y + 10], 180, 360, fill=hair)
    for eye in (14, 15):
        ex, ey = pts[eye]
        draw.ellipse([ex - 5, ey - 5, ex + 5, ey + 5], fill=(30, 30, 40))
    draw.arc([x - 16, y + 6, x + 16, y + 26], 20, 160, fill=(150, 60, 60), width=4)
    return image


def main():
    os.makedirs(ASSETS, exist_ok=True)
    rest = skeleton()
    draw_character(rest).save(os.path.join(ASSETS, "character.png"), optimize=True)
    for name, frames in (("character.json", [frame(rest)]), ("dance.json", dance())):
        with open(os.path.join(ASSETS, name), "w", encoding="utf-8") as f:
            json.dump(to_pose_keypoint(frames), f, separators=(",", ":"))
    for name in sorted(os.listdir(ASSETS)):
        print(f"{name}: {os.path.getsize(os.path.join(ASSETS, name))} bytes")


if __name__ == "__main__":
    main()
