"""Head-Sync Stabilizer: camera intrinsics and per-frame head pose from landmarks, keypoint tracks and bundle
adjustment, without a 3DMM (no BFM).

    estimate = estimate_head_poses(landmarks, flags, width, height, frames=lambda: iter(frames))

1. per-frame rigid fit of MediaPipe's canonical face (33 rigid landmarks) and a focal-length search;
2. optical-flow keypoints on the rigid head region (preprocess/pose/tracking.py);
3. bundle adjustment of poses, focal, model proportions and keypoints with a temporal prior
   (preprocess/pose/bundle.py).
Poses come out as camera-to-world matrices in the dataset convention (docs/dataset.md): head at the origin,
camera moving, OpenCV camera axes, world units of CM_PER_UNIT centimetres.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from preprocess.pose.bundle import bundle_adjust, lift_tracks
from preprocess.pose.fit import fit_poses, inlier_mask, intrinsics, project, search_focal
from preprocess.pose.tracking import Tracks, track_keypoints
from synctalk.data.contract import FACE_DETECTED, FACE_MISSING
from synctalk.face.canonical import CM_PER_UNIT, load_canonical_face


@dataclass
class PoseEstimate:
    K: np.ndarray                 # [3, 3]
    c2w: np.ndarray               # [N, 4, 4] stabilised, world units
    c2w_raw: np.ndarray           # [N, 4, 4] per-frame fit, world units
    error_raw_px: np.ndarray      # [N] RMS reprojection error of the rigid landmarks, per-frame fit
    error_px: np.ndarray          # [N] the same for the stabilised poses
    euler_raw_deg: np.ndarray     # [N, 3] yaw, pitch, roll of the head
    euler_deg: np.ndarray         # [N, 3]
    stats: dict = field(default_factory=dict)


def euler_degrees(rotations: np.ndarray) -> np.ndarray:
    """Head yaw (about y), pitch (about x), roll (about z) in degrees from world-to-camera rotations [N, 3, 3]."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rotations).as_euler("yxz", degrees=True)


def jitter_deg(euler: np.ndarray, valid: np.ndarray) -> float:
    """RMS over frames and angles of the second difference of the head angles (degrees per frame²), over
    frame triples that all have a face: high-frequency shake, blind to slow head motion."""
    accel = euler[2:] - 2 * euler[1:-1] + euler[:-2]
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    return float(np.sqrt((accel[ok] ** 2).mean())) if ok.any() else float("nan")


def to_c2w(rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """World-to-camera (R, t in cm) → camera-to-world [N, 4, 4] in world units."""
    c2w = np.tile(np.eye(4), (len(rotations), 1, 1))
    c2w[:, :3, :3] = rotations.transpose(0, 2, 1)
    c2w[:, :3, 3] = -np.einsum("nji,nj->ni", rotations, translations) / CM_PER_UNIT
    return c2w.astype(np.float32)


def rigid_errors(model_rigid: np.ndarray, observed: np.ndarray, rotations: np.ndarray, translations: np.ndarray,
                 K: np.ndarray) -> np.ndarray:
    return np.array([np.sqrt(((project(model_rigid, r, t, K) - o) ** 2).sum(-1).mean())
                     for r, t, o in zip(rotations, translations, observed, strict=True)])


def estimate_head_poses(landmarks: np.ndarray, flags: np.ndarray, width: int, height: int,
                        frames: Callable[[], Iterable[np.ndarray]] | None = None,
                        focal_range: tuple[float, float] = (0.8, 3.0), smoothness: float = 2.0,
                        track_points: int = 80, iterations: int = 300, task_path=None,
                        progress: bool = False) -> PoseEstimate:
    """Estimate intrinsics and stabilised head poses for a clip (see the module docstring).

    Args:
        landmarks: [N, 478, 3] pixels; flags: [N] face flags (only FACE_DETECTED frames are evidence).
        frames: returns the clip's RGB frames in order, for keypoint tracking (None: landmarks only).
        focal_range: focal search range as multiples of the image width.
        smoothness: weight of the temporal prior (0 turns it off).
        progress: show the keypoint tracking and the bundle adjustment's progress (synctalk.progress).
    """
    from synctalk.progress import Progress, track

    face = load_canonical_face(task_path)
    model_rigid = face.rigid_points
    observed = landmarks[:, face.rigid_ids, :2].astype(np.float64)
    evidence = flags == FACE_DETECTED
    if evidence.sum() < 3:
        raise ValueError("head pose needs at least 3 frames with a detected face")
    # Focal search and per-frame fits twice: the second time without the landmark outliers found by the first.
    focal0, _ = search_focal(model_rigid, observed[evidence], width, height, focal_range)
    K0 = intrinsics(focal0, width, height)
    rotations0, translations0, _ = fit_poses(model_rigid, observed, K0)
    inliers = inlier_mask(model_rigid, observed, rotations0, translations0, K0)
    focal0, scan = search_focal(model_rigid, observed[evidence], width, height, focal_range,
                                inliers=inliers[evidence])
    K0 = intrinsics(focal0, width, height)
    rotations0, translations0, _ = fit_poses(model_rigid, observed, K0, inliers)

    tracks, lifted = None, None
    if frames is not None and track_points > 0:
        tracks = track_keypoints(track(frames(), "pose: keypoint tracks", total=len(flags), unit="frame",
                                       enabled=progress, leave=False),
                                 landmarks, flags != FACE_MISSING, max_points=track_points)
        if tracks.n_points:
            lifted, found = lift_tracks(tracks, face.vertices, face.triangles, rotations0, translations0, K0)
            tracks = _keep_points(tracks, found)
            lifted = lifted[found]
    with Progress("pose: bundle adjustment", total=int(iterations * 1.25), unit="evaluation", enabled=progress,
                  leave=False) as bar:
        result = bundle_adjust(face.vertices, face.rigid_ids, observed, evidence[:, None] & inliers, rotations0,
                               translations0, focal0, width, height, tracks, lifted, smoothness=smoothness,
                               iterations=iterations, on_evaluation=lambda: bar.update(1))
    K = intrinsics(result.focal, width, height)
    # The per-frame fit, redone with the final focal, is the "stabiliser off" trajectory.
    rotations_raw, translations_raw, _ = fit_poses(model_rigid, observed, K, inliers)
    error_raw = rigid_errors(model_rigid, observed, rotations_raw, translations_raw, K)
    error = rigid_errors(model_rigid * result.model_scale, observed, result.rotations, result.translations, K)
    euler_raw, euler = euler_degrees(rotations_raw), euler_degrees(result.rotations)
    valid = flags != FACE_MISSING
    stats = {
        "focal_px": round(result.focal, 2), "focal_initial_px": round(focal0, 2), **scan,
        "model_scale_xyz": result.model_scale.round(4).tolist(), "cm_per_unit": CM_PER_UNIT,
        "metres_per_unit": CM_PER_UNIT / 100,
        "tracks": int(tracks.n_points) if tracks else 0,
        "track_observations": int(len(tracks.frame_ids)) if tracks else 0,
        "landmark_outliers": int((~inliers[evidence]).sum()),
        "reprojection_px_raw": round(float(error_raw[evidence].mean()), 4),
        "reprojection_px": round(float(error[evidence].mean()), 4),
        "jitter_deg_raw": round(jitter_deg(euler_raw, valid), 5), "jitter_deg": round(jitter_deg(euler, valid), 5),
        "bundle_iterations": result.iterations, "smoothness": smoothness,
    }
    return PoseEstimate(K, to_c2w(result.rotations, result.translations), to_c2w(rotations_raw, translations_raw),
                        error_raw, error, euler_raw, euler, stats)


def _keep_points(tracks: Tracks, keep: np.ndarray) -> Tracks:
    mask = keep[tracks.point_ids]
    renumber = np.cumsum(keep) - 1
    return Tracks(tracks.frame_ids[mask], renumber[tracks.point_ids[mask]], tracks.pixels[mask], int(keep.sum()))
