"""Pose rendering in the moore and musepose styles."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseanimate.pose import render
from poseanimate.pose.keypoints import (
    L_SHOULDER, NECK, R_SHOULDER, Person, PoseFrame, from_pose_keypoint, missing_points,
)

FIXTURE = Path(__file__).parent / "data" / "render"


@pytest.fixture(scope="module")
def full_frame():
    return from_pose_keypoint(json.loads((FIXTURE / "full_512x768.json").read_text()))[0]


def _body_frame(points, width=512, height=768, **parts):
    body = missing_points(18)
    for index, (x, y) in points.items():
        body[index] = (x, y, 1.0)
    return PoseFrame([Person(body=body, **parts)], width, height)


def _thickness(image, x, y0, y1):
    """Non-black run length along column x between rows y0 and y1."""
    return int(image[y0:y1, x].any(axis=-1).sum())


def test_moore_reproduces_the_reference_picture(full_frame):
    expected = cv2.cvtColor(cv2.imread(str(FIXTURE / "full_512x768.png")), cv2.COLOR_BGR2RGB)
    image = render.render_frame(full_frame, 512, 768, style="moore")
    assert image.dtype == np.uint8 and image.shape == (768, 512, 3)
    assert expected.any()
    np.testing.assert_array_equal(image, expected)


def test_moore_colours_where_they_belong():
    frame = _body_frame({NECK: (200, 300), R_SHOULDER: (300, 300)})
    image = render.render_frame(frame, 512, 768, "moore")
    dimmed_limb = (np.array(render.BODY_COLORS[0]) * 0.6).astype(np.uint8)
    np.testing.assert_array_equal(image[300, 250], dimmed_limb)
    np.testing.assert_array_equal(image[303, 250], dimmed_limb)
    assert not image[306, 250].any()
    np.testing.assert_array_equal(image[300, 200], render.BODY_COLORS[NECK])
    np.testing.assert_array_equal(image[300, 300], render.BODY_COLORS[R_SHOULDER])
    ys, xs = np.nonzero(image.any(axis=-1))
    assert xs.min() >= 195 and xs.max() <= 305 and ys.min() >= 295 and ys.max() <= 305


def test_musepose_swaps_red_and_blue():
    frame = _body_frame({NECK: (200, 300), R_SHOULDER: (300, 300)})
    moore = render.render_frame(frame, 512, 768, "moore")
    muse = render.render_frame(frame, 512, 768, "musepose")
    np.testing.assert_array_equal(muse[300, 250], moore[300, 250][::-1])
    np.testing.assert_array_equal(muse[300, 200], np.array(render.BODY_COLORS[NECK])[::-1])
    assert muse[300, 250, 2] > 0 and muse[300, 250, 0] == 0


def test_musepose_width_grows_with_limb_length_and_moore_does_not():
    points = {NECK: (300, 300), R_SHOULDER: (700, 300), L_SHOULDER: (270, 300)}
    widths = {}
    for style in ("moore", "musepose"):
        draw_w, draw_h = getattr(render, f"{style}_draw_size")(1024, 1536)
        frame = _body_frame({k: (x * draw_w / 1024, y * draw_h / 1536) for k, (x, y) in points.items()},
                            draw_w, draw_h)
        image = render.render_frame(frame, draw_w, draw_h, style)
        scale = draw_w / 1024
        widths[style] = (_thickness(image, int(500 * scale), int(250 * scale), int(350 * scale)),
                         _thickness(image, int(285 * scale), int(250 * scale), int(350 * scale)))
    long_limb, short_limb = widths["musepose"]
    assert (long_limb, short_limb) == (2 * render.musepose_width(400) + 1, 2 * render.musepose_width(30) + 1)
    assert long_limb > short_limb
    assert widths["moore"][0] == widths["moore"][1] == 2 * 4 + 1


def test_hand_edges_and_joints():
    hand = missing_points(21)
    hand[0], hand[1], hand[5] = (100, 100, 1), (140, 100, 1), (100, 160, 1)
    frame = PoseFrame([Person(left_hand=hand)], 512, 768)
    moore = render.render_frame(frame, 512, 768, "moore")
    np.testing.assert_array_equal(moore[100, 120], (255, 0, 0))       # edge 0: hue 0
    np.testing.assert_array_equal(moore[130, 100], (204, 255, 0))     # edge 4: hue 0.2
    np.testing.assert_array_equal(moore[100, 140], (0, 0, 255))       # joint
    assert _thickness(moore, 120, 90, 110) == 3                       # cv2 line of thickness 2
    assert moore[100, 144].any() and not moore[100, 146].any()        # joint radius 4
    muse = render.render_frame(frame, 512, 768, "musepose")
    np.testing.assert_array_equal(muse[100, 140], (255, 0, 0))
    np.testing.assert_array_equal(muse[130, 100], (0, 255, 204))


def test_parts_are_switchable(full_frame):
    def count(image, color):
        return int((image == np.array(color, np.uint8)).all(axis=-1).sum())

    full = render.render_frame(full_frame, 512, 768, "moore")
    assert count(full, render.FACE_COLOR) > 0 and count(full, render.HAND_JOINT_COLOR) > 0

    no_face = render.render_frame(full_frame, 512, 768, "moore", face=False)
    assert count(no_face, render.FACE_COLOR) == 0

    fingertip = full_frame.people[0].left_hand[20, :2].astype(int)
    np.testing.assert_array_equal(full[fingertip[1], fingertip[0]], render.HAND_JOINT_COLOR)
    no_hands = render.render_frame(full_frame, 512, 768, "moore", hands=False)
    assert not no_hands[fingertip[1], fingertip[0]].any()

    no_body = render.render_frame(full_frame, 512, 768, "moore", body=False)
    knee = full_frame.people[0].body[9, :2].astype(int)
    assert full[knee[1], knee[0]].any() and not no_body[knee[1], knee[0]].any()
    np.testing.assert_array_equal(no_body[fingertip[1], fingertip[0]], render.HAND_JOINT_COLOR)

    muse = render.render_frame(full_frame, 512, 768, "musepose")
    muse_face = render.render_frame(full_frame, 512, 768, "musepose", face=True)
    assert count(muse, render.FACE_COLOR) == 0 and count(muse_face, render.FACE_COLOR) > 0


@pytest.mark.parametrize("style", ["moore", "musepose"])
@pytest.mark.parametrize("size", [(256, 384), (1024, 1536), (576, 1024), (333, 517)])
def test_line_widths_scale_with_the_output(full_frame, style, size):
    reference = render.render_frame(full_frame, 512, 768, style)
    image = render.render_frame(full_frame, *size, style)
    assert image.shape == (size[1], size[0], 3)
    def drawn(picture):
        return (picture.max(axis=-1) > 40).mean()  # resampling leaves faint halos; count clear pixels

    assert drawn(image) == pytest.approx(drawn(reference), rel=0.15)
    knee = full_frame.people[0].body[9, :2] / (512, 768) * size
    assert image[int(knee[1]), int(knee[0])].any()


def test_pose_canvas_size_only_sets_the_coordinate_frame(full_frame):
    bigger = full_frame.scaled_to(1000, 1500)
    for style in ("moore", "musepose"):
        a = render.render_frame(full_frame, 512, 768, style)
        b = render.render_frame(bigger, 512, 768, style)
        assert (a != b).any(axis=-1).mean() < 0.002


def test_drawing_sizes_follow_the_references():
    assert render.moore_draw_size(512, 768) == (512, 768)
    assert render.moore_draw_size(1920, 1080) == (896, 512)    # 910.2 -> nearest multiple of 64
    assert render.moore_draw_size(720, 1280) == (512, 896)
    assert render.musepose_draw_size(512, 768) == (1024, 1536)
    assert render.musepose_draw_size(1920, 1080) == (1820, 1024)  # 1820.4 floored to even


def test_missing_points_draw_nothing():
    frame = _body_frame({NECK: (200, 300)})
    frame.people[0].body[R_SHOULDER] = (np.nan, np.nan, 0.0)
    image = render.render_frame(frame, 512, 768, "moore")
    ys, xs = np.nonzero(image.any(axis=-1))
    assert xs.min() >= 196 and xs.max() <= 204
    assert not render.render_frame(PoseFrame([], 512, 768), 512, 768).any()


def test_render_frames_stacks(full_frame):
    frames = render.render_frames([full_frame, PoseFrame([], 512, 768)], 128, 192, "musepose")
    assert frames.shape == (2, 192, 128, 3) and frames[0].any() and not frames[1].any()
    assert render.render_frames([], 64, 64).shape == (0, 64, 64, 3)


def test_unknown_style_and_bad_size_are_named(full_frame):
    with pytest.raises(ValueError, match="moore, musepose, unianimate"):
        render.get_style("openpose")
    with pytest.raises(ValueError, match="positive integers"):
        render.render_frame(full_frame, 0, 10)
    assert render.style_names() == ["moore", "musepose", "unianimate"]


@pytest.mark.parametrize("style", ["moore", "musepose"])
def test_people_off_the_canvas_are_clipped(style):
    line = np.linspace(0, 1, 18)
    off = {i: (600 + 200 * t, -300 + 200 * t) for i, t in enumerate(line)}
    assert not render.render_frame(_body_frame(off), 512, 768, style).any()
    # limbs crossing the top-left corner: still drawn and dimmed; only the joints are at full colour
    corner = {i: (-150 + 250 * t, -150 + 250 * t) for i, t in enumerate(line)}
    image = render.render_frame(_body_frame(corner), 512, 768, style)
    limbs = image.copy()
    for x, y in corner.values():
        cv2.circle(limbs, (int(x), int(y)), 6, (0, 0, 0), -1)
    assert image.any() and limbs.max() <= int(255 * render.LIMB_DIM)
