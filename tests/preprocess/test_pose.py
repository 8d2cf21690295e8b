"""Head-Sync Stabilizer: synthetic ground truth (pose, translation, focal), conventions, real-clip jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_file
from scipy.spatial.transform import Rotation

from preprocess.pose import CM_PER_UNIT, estimate_head_poses, jitter_deg, to_c2w


@pytest.fixture(scope="module")
def task_path():
    return real_file("models/face_landmarker.task")


def synthetic_clip(task_path, n=150, focal=1100.0, size=512, noise_px=1.0, outliers=0.05, seed=0):
    """The canonical face flying along smooth random trajectories (yaw ±15°, pitch ±10°, roll ±5°, ~55 cm away),
    projected through a known pinhole, with Gaussian landmark noise and gross outliers."""
    from preprocess.pose.canonical import load_canonical_face

    rng = np.random.default_rng(seed)
    face = load_canonical_face(task_path)
    t = np.arange(n) / 25

    def trajectory(amplitude):
        freqs, phases, weights = rng.uniform(0.15, 0.6, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.5, 1, 3)
        signal = sum(w * np.sin(2 * np.pi * f * t + p) for w, f, p in zip(weights, freqs, phases, strict=True))
        return amplitude * signal / np.abs(signal).max()

    angles = np.stack([trajectory(15), trajectory(10), trajectory(5)], 1)
    rotations = Rotation.from_euler("yxz", angles, degrees=True).as_matrix()
    translations = np.stack([trajectory(3), trajectory(2), 55 + trajectory(4)], 1)
    cam = np.einsum("nij,vj->nvi", rotations, face.vertices) + translations[:, None]
    landmarks = np.zeros((n, 478, 3), np.float32)
    landmarks[:, :468, :2] = cam[..., :2] / cam[..., 2:3] * focal + size / 2
    landmarks[..., :2] += rng.normal(0, noise_px, (n, 478, 2))
    bad = rng.random((n, 478)) < outliers
    landmarks[..., :2][bad] += rng.uniform(-25, 25, (int(bad.sum()), 2))
    assert np.ptp(angles[:, 0]) > 25 and np.ptp(angles[:, 1]) > 17  # spans about ±15° yaw and ±10° pitch
    return landmarks, np.ones(n, np.uint8), rotations, translations, focal


def w2c_from(c2w):
    rotations = c2w[:, :3, :3].transpose(0, 2, 1).astype(np.float64)
    translations = -np.einsum("nij,nj->ni", rotations, c2w[:, :3, 3].astype(np.float64)) * CM_PER_UNIT
    return rotations, translations


def test_synthetic_ground_truth(task_path):
    landmarks, flags, rotations, translations, focal = synthetic_clip(task_path)
    estimate = estimate_head_poses(landmarks, flags, 512, 512, task_path=task_path)
    est_r, est_t = w2c_from(estimate.c2w)
    rotation_error = np.degrees(np.linalg.norm(
        Rotation.from_matrix(est_r @ rotations.transpose(0, 2, 1)).as_rotvec(), axis=1))
    translation_error = np.linalg.norm(est_t - translations, axis=1) / translations[:, 2]
    assert np.median(rotation_error) < 0.5
    assert np.median(translation_error) < 0.01
    assert abs(estimate.K[0, 0] - focal) / focal < 0.05
    # The stabiliser beats the per-frame fit on this noisy input.
    raw_r, _ = w2c_from(estimate.c2w_raw)
    raw_error = np.degrees(np.linalg.norm(Rotation.from_matrix(raw_r @ rotations.transpose(0, 2, 1)).as_rotvec(),
                                          axis=1))
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
