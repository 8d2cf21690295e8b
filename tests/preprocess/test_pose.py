"""Head-Sync Stabilizer: synthetic ground truth (pose, translation, focal), conventions, real-clip jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_file

from preprocess.pose import CM_PER_UNIT, estimate_head_poses, jitter_deg, to_c2w
from preprocess.pose.synthetic import pose_errors, synthetic_clip


@pytest.fixture(scope="module")
def task_path():
    return real_file("models/face_landmarker.task")


def test_synthetic_ground_truth(task_path):
    clip = synthetic_clip(task_path)
    assert np.ptp(clip.angles_deg[:, 0]) > 25 and np.ptp(clip.angles_deg[:, 1]) > 17  # about ±15° yaw, ±10° pitch
    estimate = estimate_head_poses(clip.landmarks, clip.flags, 512, 512, task_path=task_path)
    rotation_error, translation_error = pose_errors(estimate.c2w, clip)
    assert np.median(rotation_error) < 0.5
    assert np.median(translation_error) < 0.01
    assert abs(estimate.K[0, 0] - clip.focal) / clip.focal < 0.05
    # The stabiliser beats the per-frame fit on this noisy input.
    raw_error, _ = pose_errors(estimate.c2w_raw, clip)
    assert np.median(rotation_error) < np.median(raw_error)


def test_frontal_camera_convention():
    c2w = to_c2w(np.eye(3)[None], np.array([[0.0, 0.0, 60.0]]))
    assert np.allclose(c2w[0, :3, :3], np.eye(3)) and np.allclose(c2w[0, :3, 3], [0, 0, -60 / CM_PER_UNIT])


def test_jitter_metric():
    ramp = np.stack([np.arange(10.0)] * 3, 1)
    assert jitter_deg(ramp, np.ones(10, bool)) == 0.0  # steady motion is not jitter
    zigzag = np.zeros((6, 3))
    zigzag[:, 0] = [1, -1, 1, -1, 1, -1]
    assert jitter_deg(zigzag, np.ones(6, bool)) == pytest.approx(np.sqrt(16 / 3))
    assert jitter_deg(zigzag, np.array([1, 1, 0, 1, 1, 1], bool)) == pytest.approx(np.sqrt(16 / 3))


def test_real_clip_stabiliser(may_subject):
    from synctalk.data import SubjectDataset

    _, root, _ = may_subject
    ds = SubjectDataset(root, require=("pose",))
    stats = json.loads((root / "meta.json").read_text())["pose"]
    assert stats["jitter_deg_raw"] >= 2 * stats["jitter_deg"]
    assert stats["reprojection_px"] <= 1.10 * stats["reprojection_px_raw"]
    assert stats["tracks"] > 20
    assert 0.8 * 512 <= ds.intrinsics[0, 0] <= 3.0 * 512
    # The head stays inside the unit bound and the camera in front of the face.
    assert (ds.poses[:, 2, 3] < -1).all() and np.abs(ds.poses[:, :3, 3]).max() < 20
