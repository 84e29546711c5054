"""Retargeting a driving sequence onto a character's proportions."""

import numpy as np
import pytest

from poseanimate.pose import retarget as rt
from poseanimate.pose.keypoints import (
    L_ELBOW, L_SHOULDER, L_WRIST, NECK, NOSE, R_ANKLE, R_ELBOW, R_EYE, R_HIP, R_KNEE, R_SHOULDER,
    R_WRIST, L_HIP, L_KNEE, L_ANKLE, Person, PoseFrame, present_mask,
)

LENGTHS = {
    NOSE: 70, R_SHOULDER: 55, 5: 55, R_HIP: 180, 11: 180, R_ELBOW: 90, 6: 90, R_WRIST: 80, 7: 80,
    R_KNEE: 120, 12: 120, R_ANKLE: 115, 13: 115, R_EYE: 18, 15: 18, 16: 20, 17: 20,
}
BASE_ANGLES = {  # degrees, image coordinates (y down)
    NOSE: -90, R_SHOULDER: 180, 5: 0, R_HIP: 100, 11: 80, R_ELBOW: 110, 6: 70, R_WRIST: 95, 7: 85,
    R_KNEE: 92, 12: 88, R_ANKLE: 90, 13: 90, R_EYE: -120, 15: -60, 16: 170, 17: 10,
}
HAND_SHAPE = np.array([[0, 0]] + [[np.cos(a) * r, np.sin(a) * r] for a in np.linspace(-0.8, 0.8, 5)
                                  for r in (8, 14, 19, 23)], dtype=float)
FACE_SHAPE = np.array([[np.cos(a) * 22, np.sin(a) * 28 + 6] for a in np.linspace(0, 2 * np.pi, 68, endpoint=False)])


def skeleton(neck, angles, lengths=LENGTHS, hand_scale=1.0, face_scale=1.0):
    body = np.zeros((18, 3))
    body[:, 2] = 0.9
    body[NECK, :2] = neck
    for parent, child in rt.BONES:
        a = np.deg2rad(angles[child])
        body[child, :2] = body[parent, :2] + lengths[child] * np.array([np.cos(a), np.sin(a)])
    parts = {"body": body}
    for hand, wrist, elbow in (("right_hand", R_WRIST, R_ELBOW), ("left_hand", L_WRIST, L_ELBOW)):
        a = np.deg2rad(angles[wrist])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        parts[hand] = np.column_stack([body[wrist, :2] + hand_scale * HAND_SHAPE @ rot.T, np.full(21, 0.8)])
    parts["face"] = np.column_stack([body[NOSE, :2] + face_scale * FACE_SHAPE, np.full(68, 0.7)])
    return Person(**parts)


def driving_sequence(frames=12, width=640, height=720, seed=0):
    rng = np.random.default_rng(seed)
    phases = {k: rng.uniform(0, 2 * np.pi) for k in BASE_ANGLES}
    sequence = []
    for t in range(frames):
        angles = {k: v + 25 * np.sin(0.5 * t + phases[k]) for k, v in BASE_ANGLES.items()}
        neck = (320 + 40 * np.sin(0.3 * t), 200 + 10 * np.cos(0.4 * t))
        sequence.append(PoseFrame([skeleton(neck, angles)], width, height))
    return sequence


def scaled_about(person, center, k):
    return person.map_xy(lambda xy: center + k * (xy - center))


def remove(person, body_points=(), parts=()):
    person = person.copy()
    person.body[list(body_points)] = (np.nan, np.nan, 0.0)
    for part in parts:
        person.part(part)[:] = (np.nan, np.nan, 0.0)
    return Person(body=person.body, face=person.face, left_hand=person.left_hand, right_hand=person.right_hand)


def assert_same_person(a, b, atol=1e-6):
    for part in ("body", "face", "left_hand", "right_hand"):
        np.testing.assert_array_equal(present_mask(a.part(part)), present_mask(b.part(part)), err_msg=part)
        np.testing.assert_allclose(a.part(part), b.part(part), atol=atol, equal_nan=True, err_msg=part)


def test_identity_when_character_is_the_driving():
    driving = driving_sequence()
    out = rt.retarget(driving, driving[0])
    for a, b in zip(out, driving):
        assert (a.width, a.height) == (b.width, b.height)
        assert_same_person(a.people[0], b.people[0])


@pytest.mark.parametrize("k", [1.4, 0.6])
def test_character_scaled_about_the_neck_scales_the_sequence(k):
    driving = driving_sequence()
    neck = driving[0].people[0].body[NECK, :2]
    character = PoseFrame([scaled_about(driving[0].people[0], neck, k)], 900, 1100)
    out = rt.retarget(driving, character)
    for a, b in zip(out, driving):
        assert (a.width, a.height) == (900, 1100)
        assert_same_person(a.people[0], scaled_about(b.people[0], neck, k))


def test_per_bone_ratios_and_left_right_share_the_larger():
    driving = driving_sequence()
    lengths = dict(LENGTHS)
    lengths[R_KNEE] *= 1.5  # right thigh 1.5x, left thigh 1.2x: both become 1.5x
    lengths[L_KNEE] *= 1.2
    lengths[R_ELBOW] *= 0.8  # upper arms 0.8x
    lengths[L_ELBOW] *= 0.8
    character = PoseFrame([skeleton((300, 150), BASE_ANGLES, lengths)], 640, 720)
    out = rt.retarget(driving, character)
    for a, b in zip(out, driving):
        ratios = rt.bone_lengths(a.people[0]) / rt.bone_lengths(b.people[0])
        expected = np.ones(len(rt.BONES))
        expected[[rt.BONE_INDEX[R_KNEE], rt.BONE_INDEX[L_KNEE]]] = 1.5
        expected[[rt.BONE_INDEX[R_ELBOW], rt.BONE_INDEX[L_ELBOW]]] = 0.8
        np.testing.assert_allclose(ratios, expected, rtol=1e-9)
        direction_in = b.people[0].body[R_KNEE, :2] - b.people[0].body[R_HIP, :2]
        direction_out = a.people[0].body[R_KNEE, :2] - a.people[0].body[R_HIP, :2]
        np.testing.assert_allclose(direction_out, 1.5 * direction_in, rtol=1e-9)
    np.testing.assert_allclose(out[0].people[0].body[NECK, :2], (300, 150))


def test_hands_and_face_follow_rigidly_scaled_by_their_bones():
    driving = driving_sequence()
    lengths = dict(LENGTHS)
    lengths[R_WRIST] *= 1.3  # forearms
    lengths[R_EYE] *= 0.7  # nose-eye: head size
    lengths[15] *= 0.7
    character = PoseFrame([skeleton((300, 150), BASE_ANGLES, lengths)], 640, 720)
    out = rt.retarget(driving, character)
    for a, b in zip(out, driving):
        pa, pb = a.people[0], b.people[0]
        np.testing.assert_allclose(pa.right_hand[:, :2] - pa.body[R_WRIST, :2],
                                   1.3 * (pb.right_hand[:, :2] - pb.body[R_WRIST, :2]), atol=1e-9)
        np.testing.assert_allclose(pa.left_hand[:, :2] - pa.body[L_WRIST, :2],
                                   1.3 * (pb.left_hand[:, :2] - pb.body[L_WRIST, :2]), atol=1e-9)
        np.testing.assert_allclose(pa.face[:, :2] - pa.body[NOSE, :2],
                                   0.7 * (pb.face[:, :2] - pb.body[NOSE, :2]), atol=1e-9)
        np.testing.assert_allclose(pa.right_hand[:, 2], pb.right_hand[:, 2])


def test_an_occluded_frame_does_not_distort_the_rest():
    clean = driving_sequence()
    neck = clean[0].people[0].body[NECK, :2]
    character = PoseFrame([scaled_about(clean[0].people[0], neck, 1.25)], 640, 720)
    expected = rt.retarget(clean, character)

    occluded = [f.copy() for f in clean]
    occluded[3] = PoseFrame([remove(occluded[3].people[0], [R_ELBOW], ["right_hand"])], 640, 720)
    collapsed = occluded[7].people[0]  # a forearm seen end-on: 30% of its length
    elbow = collapsed.body[L_ELBOW, :2]
    collapsed.body[L_WRIST, :2] = elbow + 0.3 * (collapsed.body[L_WRIST, :2] - elbow)
    out = rt.retarget(occluded, character)

    for i, (a, b) in enumerate(zip(out, expected)):
        if i == 3:
            assert not a.people[0].present("body")[R_ELBOW]
            assert not a.people[0].present("right_hand").any()
            keep = present_mask(a.people[0].body)
            np.testing.assert_allclose(a.people[0].body[keep], b.people[0].body[keep], atol=1e-6)
        elif i == 7:
            others = np.arange(18) != L_WRIST
            np.testing.assert_allclose(a.people[0].body[others], b.people[0].body[others], atol=1e-6)
        else:
            assert_same_person(a.people[0], b.people[0])


def test_a_driving_arm_missing_throughout_does_not_distort_the_rest():
    clean = driving_sequence()
    neck = clean[0].people[0].body[NECK, :2]
    character = PoseFrame([scaled_about(clean[0].people[0], neck, 1.25)], 640, 720)
    expected = rt.retarget(clean, character)
    one_armed = [PoseFrame([remove(f.people[0], [L_ELBOW, L_WRIST], ["left_hand"])], 640, 720) for f in clean]
    out = rt.retarget(one_armed, character)
    for a, b in zip(out, expected):
        pa = a.people[0]
        assert not pa.present("body")[[L_ELBOW, L_WRIST]].any() and not pa.present("left_hand").any()
        keep = present_mask(pa.body)
        np.testing.assert_allclose(pa.body[keep], b.people[0].body[keep], atol=1e-6)
        np.testing.assert_allclose(pa.right_hand, b.people[0].right_hand, atol=1e-6)


def test_character_with_a_missing_arm_still_retargets_both_arms():
    driving = driving_sequence()
    neck = driving[0].people[0].body[NECK, :2]
    whole = scaled_about(driving[0].people[0], neck, 1.25)
    one_armed = remove(whole, [L_ELBOW, L_WRIST], ["left_hand"])
    proportions = rt.estimate_proportions(one_armed, [f.people[0] for f in driving])
    assert proportions.sources[rt.BONE_INDEX[L_ELBOW]] == "mirror"
    assert proportions.sources[rt.BONE_INDEX[L_WRIST]] == "mirror"
    out = rt.retarget(driving, PoseFrame([one_armed], 640, 720))
    for a, b in zip(out, driving):
        assert_same_person(a.people[0], scaled_about(b.people[0], neck, 1.25))


def test_character_without_legs_uses_the_overall_scale_for_them():
    driving = driving_sequence()
    neck = driving[0].people[0].body[NECK, :2]
    portrait = remove(scaled_about(driving[0].people[0], neck, 0.8),
                      [R_HIP, L_HIP, R_KNEE, L_KNEE, R_ANKLE, L_ANKLE])
    proportions = rt.estimate_proportions(portrait, [f.people[0] for f in driving])
    assert proportions.scale == pytest.approx(0.8)
    assert {proportions.sources[rt.BONE_INDEX[j]] for j in (R_HIP, R_KNEE, R_ANKLE)} == {"overall"}
    out = rt.retarget(driving, PoseFrame([portrait], 640, 720))
    for a, b in zip(out, driving):
        assert_same_person(a.people[0], scaled_about(b.people[0], neck, 0.8))


def test_unmeasured_bone_below_a_measured_one_takes_its_parents_ratio():
    driving = driving_sequence()
    lengths = dict(LENGTHS)
    lengths[R_KNEE] *= 1.4
    lengths[L_KNEE] *= 1.4
    character = remove(skeleton((300, 150), BASE_ANGLES, lengths), [R_ANKLE, L_ANKLE])
    proportions = rt.estimate_proportions(character, [f.people[0] for f in driving])
    assert proportions.sources[rt.BONE_INDEX[R_ANKLE]] == "parent"
    assert proportions.ratio(R_ANKLE) == pytest.approx(1.4)


def test_frames_without_a_neck_use_the_overall_scale():
    driving = driving_sequence()
    neck = driving[0].people[0].body[NECK, :2]
    character = PoseFrame([scaled_about(driving[0].people[0], neck, 1.1)], 640, 720)
    driving[5] = PoseFrame([remove(driving[5].people[0], [NECK, R_SHOULDER, L_SHOULDER])], 640, 720)
    out = rt.retarget(driving, character)
    assert_same_person(out[5].people[0], scaled_about(driving[5].people[0], neck, 1.1))


def test_keep_driving_placement():
    driving = driving_sequence()
    first = driving[0].people[0]
    character = PoseFrame([scaled_about(first, first.body[NECK, :2] + 50, 1.5)], 1280, 1440)
    out = rt.retarget(driving, character, placement="driving")
    for a, b in zip(out, driving):
        neck = b.people[0].body[NECK, :2]
        expected = scaled_about(b.people[0], neck, 1.5).map_xy(lambda xy: xy - neck + 2 * neck)
        assert_same_person(a.people[0], expected)


def test_every_person_is_retargeted_and_empty_frames_stay_empty():
    driving = driving_sequence(frames=4)
    neck = driving[0].people[0].body[NECK, :2]
    second = driving[2].people[0].map_xy(lambda xy: xy + (200, 0))
    driving[2] = PoseFrame([driving[2].people[0], second], 640, 720)
    driving[3] = PoseFrame([], 640, 720)
    character = PoseFrame([scaled_about(driving[0].people[0], neck, 2.0)], 640, 720)
    out = rt.retarget(driving, character)
    assert [len(f.people) for f in out] == [1, 1, 2, 0]
    assert_same_person(out[2].people[1], scaled_about(second, neck, 2.0))


def test_errors_are_named():
    driving = driving_sequence(frames=2)
    with pytest.raises(ValueError, match="neck, driving"):
        rt.retarget(driving, driving[0], placement="hips")
    with pytest.raises(ValueError, match="character pose has nobody"):
        rt.retarget(driving, PoseFrame([], 64, 64))
    headless = remove(driving[0].people[0], [NECK])
    with pytest.raises(ValueError, match="no neck"):
        rt.retarget(driving, PoseFrame([headless], 640, 720))
    assert rt.retarget([PoseFrame([], 10, 10)], driving[0])[0].people == []


def test_bone_lengths_are_estimated_only_where_both_ends_are_seen():
    clean = driving_sequence(frames=12)
    occluded = [remove(f.people[0], [R_ELBOW] if i % 4 else [], ["right_hand"]) for i, f in enumerate(clean)]
    np.testing.assert_allclose(rt.median_bone_lengths(occluded), rt.median_bone_lengths([f.people[0] for f in clean]))
    character = clean[0].people[0]
    a = rt.estimate_proportions(character, occluded)
    b = rt.estimate_proportions(character, [f.people[0] for f in clean])
    np.testing.assert_allclose(a.ratios, b.ratios)
    assert a.sources == b.sources == ("measured",) * len(rt.BONES)
