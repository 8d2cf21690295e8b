"""Synthetic head-pose ground truth: the canonical face moved along smooth random trajectories and projected
through a known pinhole, with landmark noise and gross outliers. Used by the tests and
scripts/eval_pose_synthetic.py to measure the Head-Sync Stabilizer against known poses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticClip:
    landmarks: np.ndarray     # [N, 478, 3] float32 pixels (468 mesh points; iris slots left at 0)
    flags: np.ndarray         # [N] uint8, all detected
    rotations: np.ndarray     # [N, 3, 3] true world-to-camera rotations
    translations: np.ndarray  # [N, 3] true translations, centimetres
    focal: float
    angles_deg: np.ndarray    # [N, 3] true yaw, pitch, roll


def synthetic_clip(task_path=None, n: int = 150, focal: float = 1100.0, size: int = 512, noise_px: float = 1.0,
                   outliers: float = 0.05, seed: int = 0, yaw_deg: float = 15, pitch_deg: float = 10,
                   roll_deg: float = 5) -> SyntheticClip:
    """Yaw/pitch/roll trajectories spanning ±yaw_deg/±pitch_deg/±roll_deg, the face about 55 cm from the camera,
    Gaussian landmark noise of `noise_px` and a fraction `outliers` of landmarks moved by up to 25 px."""
    from scipy.spatial.transform import Rotation

    from synctalk.face.canonical import load_canonical_face

    rng = np.random.default_rng(seed)
    face = load_canonical_face(task_path)
    t = np.arange(n) / 25

    def trajectory(amplitude: float) -> np.ndarray:
        freqs, phases, weights = rng.uniform(0.15, 0.6, 3), rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.5, 1, 3)
        signal = sum(w * np.sin(2 * np.pi * f * t + p) for w, f, p in zip(weights, freqs, phases, strict=True))
        return amplitude * signal / np.abs(signal).max()

    angles = np.stack([trajectory(yaw_deg), trajectory(pitch_deg), trajectory(roll_deg)], 1)
    rotations = Rotation.from_euler("yxz", angles, degrees=True).as_matrix()
    translations = np.stack([trajectory(3), trajectory(2), 55 + trajectory(4)], 1)
    cam = np.einsum("nij,vj->nvi", rotations, face.vertices) + translations[:, None]
    landmarks = np.zeros((n, 478, 3), np.float32)
    landmarks[:, :468, :2] = cam[..., :2] / cam[..., 2:3] * focal + size / 2
    landmarks[..., :2] += rng.normal(0, noise_px, (n, 478, 2))
    bad = rng.random((n, 478)) < outliers
    landmarks[..., :2][bad] += rng.uniform(-25, 25, (int(bad.sum()), 2))
    return SyntheticClip(landmarks, np.ones(n, np.uint8), rotations, translations, focal, angles)


def pose_errors(c2w: np.ndarray, clip: SyntheticClip) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame rotation error (degrees) and translation error (fraction of depth) of camera-to-world poses
    in world units against the clip's truth."""
    from scipy.spatial.transform import Rotation

    from preprocess.pose import CM_PER_UNIT

    rotations = c2w[:, :3, :3].transpose(0, 2, 1).astype(np.float64)
    translations = -np.einsum("nij,nj->ni", rotations, c2w[:, :3, 3].astype(np.float64)) * CM_PER_UNIT
    rotation_deg = np.degrees(np.linalg.norm(
        Rotation.from_matrix(rotations @ clip.rotations.transpose(0, 2, 1)).as_rotvec(), axis=1))
    translation = np.linalg.norm(translations - clip.translations, axis=1) / clip.translations[:, 2]
    return rotation_deg, translation
