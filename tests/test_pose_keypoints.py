"""Keypoint types, the COCO-WholeBody -> OpenPose mapping and POSE_KEYPOINT compatibility."""

import json
import sys

import numpy as np
import pytest

from poseanimate.pose import keypoints as kp
from poseanimate.pose.keypoints import Person, PoseFrame


def _random_person(rng, missing=()):
    parts = {
        part: np.column_stack([rng.uniform(5, 500, (n, 2)), rng.uniform(0.3, 1.0, n)])
        for part, n in kp.PART_SIZES.items()
    }
    for part, index in missing:
        parts[part][index] = (0.0, 0.0, 0.0)
    return Person(**parts)


def _controlnet_aux_reader(frame):
    """The rules of comfyui_controlnet_aux's decode_json_as_poses: an empty or None list is a
    missing part; a point is present only with confidence >= 1."""

    def decompress(numbers):
        if not numbers:
            return None
        assert len(numbers) % 3 == 0
        return [(x, y) if c >= 1.0 else None for x, y, c in zip(numbers[::3], numbers[1::3], numbers[2::3])]

    return [
        {key: decompress(person.get(key)) for key in kp.JSON_KEYS.values()}
        for person in frame.get("people", [])
    ]


def test_library_import_keeps_comfy_and_torch_out():
    import subprocess

    code = (
        "import sys; import poseanimate.pose.keypoints, poseanimate.pose.render, poseanimate.pose.dwpose, "
        "poseanimate.pose.retarget, poseanimate.pose.smooth, poseanimate.pose.standin; "
        "print(sorted(m for m in ('comfy', 'torch', 'onnxruntime', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wholebody_to_openpose_mapping():
    coco = np.arange(133 * 2, dtype=float).reshape(133, 2)
    scores = np.full(133, 0.9)
    scores[[5, 6]] = [0.8, 0.6]
    person = kp.person_from_wholebody(coco, scores)
    # OpenPose index -> COCO index, spelled out by name
    expected = {
        "nose": 0, "right_shoulder": 6, "right_elbow": 8, "right_wrist": 10, "left_shoulder": 5,
        "left_elbow": 7, "left_wrist": 9, "right_hip": 12, "right_knee": 14, "right_ankle": 16,
        "left_hip": 11, "left_knee": 13, "left_ankle": 15, "right_eye": 2, "left_eye": 1,
        "right_ear": 4, "left_ear": 3,
    }
    for name, coco_index in expected.items():
        np.testing.assert_array_equal(person.body[kp.BODY_NAMES.index(name), :2], coco[coco_index])
    np.testing.assert_allclose(person.body[kp.NECK, :2], (coco[5] + coco[6]) / 2)
    assert person.body[kp.NECK, 2] == pytest.approx(0.6)
    np.testing.assert_array_equal(person.face[:, :2], coco[23:91])
    np.testing.assert_array_equal(person.left_hand[:, :2], coco[91:112])
    np.testing.assert_array_equal(person.right_hand[:, :2], coco[112:133])
    assert (person.body[:, 2] > 0).all()


def test_wholebody_threshold_and_neck_needs_both_shoulders():
    coco = np.random.default_rng(0).uniform(0, 100, (133, 2))
    scores = np.full(133, 0.9)
    scores[6] = 0.29  # right shoulder below threshold
    scores[100] = 0.3  # exactly at threshold: kept
    person = kp.person_from_wholebody(coco, scores)
    assert not person.present("body")[kp.R_SHOULDER]
    assert not person.present("body")[kp.NECK]
    assert np.isnan(person.body[kp.NECK, :2]).all()
    assert person.present("left_hand")[100 - 91]
    assert person.left_hand[100 - 91, 2] == pytest.approx(0.3)


def test_round_trip_keeps_positions_confidences_and_missing():
    rng = np.random.default_rng(1)
    people = [_random_person(rng, missing=[("body", 3), ("face", 10), ("right_hand", slice(None))]),
              _random_person(rng)]
    frames = [PoseFrame(people, 640, 480), PoseFrame([], 640, 480)]
    for mode in ("binary", "real"):
        data = kp.to_pose_keypoint(frames, confidence=mode)
        data = json.loads(json.dumps(data))
        back = kp.from_pose_keypoint(data)
        assert [len(f.people) for f in back] == [2, 0]
        assert (back[0].width, back[0].height) == (640, 480)
        for a, b in zip(people, back[0].people):
            for part in kp.PARTS:
                np.testing.assert_array_equal(a.present(part), b.present(part))
                np.testing.assert_allclose(a.part(part), b.part(part), equal_nan=True)


def test_written_format_is_what_controlnet_aux_reads():
    rng = np.random.default_rng(2)
    person = _random_person(rng, missing=[("body", 4), ("left_hand", slice(None))])
    data = kp.to_pose_keypoint([PoseFrame([person], 512, 768)])
    frame = data[0]
    assert (frame["canvas_width"], frame["canvas_height"]) == (512, 768)
    entry = frame["people"][0]
    assert len(entry["pose_keypoints_2d"]) == 18 * 3
    assert len(entry["face_keypoints_2d"]) == 70 * 3  # 68 landmarks + the two pupils
    assert entry["hand_left_keypoints_2d"] is None
    assert entry["pose_keypoints_2d"][4 * 3:4 * 3 + 3] == [0.0, 0.0, 0.0]

    decoded = _controlnet_aux_reader(frame)[0]
    body = decoded["pose_keypoints_2d"]
    assert body[4] is None
    for i in range(18):
        if i != 4:
            assert body[i] == pytest.approx(tuple(person.body[i, :2]))
    assert decoded["hand_left_keypoints_2d"] is None
    assert decoded["hand_right_keypoints_2d"][7] == pytest.approx(tuple(person.right_hand[7, :2]))
    assert decoded["face_keypoints_2d"][68] == pytest.approx(tuple(person.body[kp.R_EYE, :2]))
    assert decoded["face_keypoints_2d"][69] == pytest.approx(tuple(person.body[kp.L_EYE, :2]))


def test_reads_controlnet_aux_output():
    body = [0.0] * 54
    body[0:3] = [100.0, 50.0, 1.0]
    body[3:6] = [100.0, 90.0, 1.0]
    face = [v for i in range(70) for v in (200.0 + i, 60.0, 1.0)]
    theirs = [{
        "people": [{
            "pose_keypoints_2d": body,
            "face_keypoints_2d": face,
            "hand_left_keypoints_2d": None,
            "hand_right_keypoints_2d": [],
        }],
        "canvas_height": 300,
        "canvas_width": 400,
    }]
    (frame,) = kp.from_pose_keypoint(theirs)
    person = frame.people[0]
    assert (frame.width, frame.height) == (400, 300)
    np.testing.assert_array_equal(person.present("body"), [True, True] + [False] * 16)
    np.testing.assert_allclose(person.body[1], [100.0, 90.0, 1.0])
    np.testing.assert_allclose(person.face[:, 0], 200.0 + np.arange(68))
    assert not person.present("left_hand").any() and not person.present("right_hand").any()


def test_reads_normalised_coordinates_like_controlnet_aux_openpose():
    body = [0.0] * 54
    body[0:3] = [0.25, 0.5, 1.0]
    body[6:9] = [0.75, 1.0, 1.0]
    (frame,) = kp.from_pose_keypoint({"people": [{"pose_keypoints_2d": body}], "canvas_width": 400,
                                      "canvas_height": 200})
    np.testing.assert_allclose(frame.people[0].body[[0, 2], :2], [[100, 100], [300, 200]])


def test_reads_real_confidences_in_place():
    body = [0.0] * 54
    body[0:3] = [10.0, 20.0, 0.42]
    (frame,) = kp.from_pose_keypoint([{"people": [{"pose_keypoints_2d": body}], "canvas_width": 64,
                                       "canvas_height": 64}])
    assert frame.people[0].body[0, 2] == pytest.approx(0.42)
    assert frame.people[0].present("body").sum() == 1


@pytest.mark.parametrize("bad, message", [
    ([{"people": []}], "canvas_width"),
    ([{"people": [{"pose_keypoints_2d": [1.0, 2.0]}], "canvas_width": 8, "canvas_height": 8}], "multiple of 3"),
    ("not a list", "list of frame dicts"),
])
def test_bad_pose_keypoint_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        kp.from_pose_keypoint(bad)


def test_unknown_confidence_mode_names_choices():
    with pytest.raises(ValueError, match="binary, real"):
        kp.to_pose_keypoint([PoseFrame([Person()], 8, 8)], confidence="soft")


def test_person_shape_is_checked():
    with pytest.raises(ValueError, match=r"body must have shape \(18, 3\)"):
        Person(body=np.zeros((17, 3)))
