"""Draw docs/ptm.png: a pose window and TCAN's pose temperature map made from it.

    python tools/ptm_figure.py [OUT.png] [--frames 16] [--strength 3]

The skeleton of tests/data/render/full_512x768.json waves its arms and sways over a 16-frame window
(drawn in the Animate Anyone style at 256x384); the panels are the first pose frame, every stroke
of the window, the map (tau) at image resolution and the map on the 32x48 grid of the first
motion-module level (latents of a 256x384 video).
"""

import argparse
import json
import math
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(ROOT))

from poseanimate.pose.keypoints import L_ELBOW, L_WRIST, R_ELBOW, R_WRIST, from_pose_keypoint  # noqa: E402
from poseanimate.pose.render import render_frames  # noqa: E402
from poseanimate.sampling.temperature import grid_sizes, temperature_map, window_temperature  # noqa: E402

WIDTH, HEIGHT = 256, 384


def moving_skeleton(frames):
    base = from_pose_keypoint(json.load(open(os.path.join(ROOT, "tests", "data", "render", "full_512x768.json"))))[0]
    out = []
    for f in range(frames):
        frame = base.copy()
        person = frame.people[0]
        phase = 2 * math.pi * f / frames
        sway = 20 * math.sin(phase)
        for part in ("body", "face", "left_hand", "right_hand"):
            getattr(person, part)[:, 0] += sway
        arms = ((R_ELBOW, R_WRIST, person.right_hand, 1), (L_ELBOW, L_WRIST, person.left_hand, -1))
        for elbow, wrist, hand, sign in arms:
            lift = 90 * (1 - math.cos(phase)) * 0.5
            person.body[wrist, 1] -= lift
            person.body[elbow, 1] -= lift * 0.4
            hand[:, 1] -= lift
            person.body[wrist, 0] += sign * lift * 0.3
            hand[:, 0] += sign * lift * 0.3
        out.append(frame)
    return out


def colour_map(tau, top):
    scaled = np.clip((tau - 1) / (top - 1), 0, 1)
    rgb = cv2.applyColorMap(np.uint8(scaled * 255), cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)


def label(image, text):
    out = np.concatenate([np.full((28, image.shape[1], 3), 255, np.uint8), image])
    cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default=os.path.join(ROOT, "docs", "ptm.png"))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--strength", type=float, default=3.0)
    args = p.parse_args(argv)
    poses = render_frames(moving_skeleton(args.frames), WIDTH, HEIGHT, "moore")
    tau = temperature_map(poses, args.strength).numpy()
    grid = grid_sizes(HEIGHT // 8, WIDTH // 8, 1)[0]
    latent = window_temperature(poses, range(args.frames), args.strength, [grid])[grid].numpy()
    top = float(tau.max())
    strokes = np.where(np.any(poses != 0, axis=(0, 3))[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    latent_big = cv2.resize(colour_map(latent, top), (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    gap = np.full((HEIGHT + 28, 8, 3), 255, np.uint8)
    panels = [label(poses[0], "pose frame 1"), label(strokes, f"strokes, {args.frames} frames"),
              label(colour_map(tau, top), f"tau 1 .. {top:.2f}"),
              label(latent_big, f"tau on {grid[1]}x{grid[0]} latents")]
    row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
    bar = colour_map(np.linspace(1, top, row.shape[1])[None].repeat(12, 0), top)
    image = np.concatenate([row, np.full((6, row.shape[1], 3), 255, np.uint8), bar])
    cv2.imwrite(args.out, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    drawn = np.mean(strokes[..., 0] > 0)
    print(f"{args.out}: tau mean {tau.mean():.3f}, max {top:.3f}, strokes {drawn:.3f} of the image")


if __name__ == "__main__":
    main()
