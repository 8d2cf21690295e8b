"""Bundle adjustment of the head trajectory (PyTorch, float64, L-BFGS).

Unknowns: every frame's world-to-camera pose (axis-angle + translation), the focal length, the proportions of
the landmark model (a per-axis scale of the canonical face; its mean log-scale is held at 0 because a uniform
scale is not observable under perspective: scaling the world and the translations together changes no pixel),
and the 3D positions of the optical-flow keypoints.

Objective (each term a mean, in pixels²):
    cauchy(rigid-landmark reprojection) + track_weight · huber(keypoint reprojection)
    + smoothness · |second difference over time of the projected positions of a few head anchor points|²
The smoothness prior is measured in pixels of image motion per frame², so its weight trades directly against
reprojection error. The landmark term is Cauchy (landmark outliers are gross: a mislocated contour point); the
keypoint term is Huber (flow errors are small and already forward-backward checked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from preprocess.pose.tracking import Tracks

# Canonical vertices used to measure head motion for the smoothness prior: forehead, nose bridge, nose tip,
# both cheekbones, chin.
ANCHOR_IDS = (10, 6, 1, 234, 454, 152)


@dataclass
class BundleResult:
    rotations: np.ndarray      # [N, 3, 3] world-to-camera
    translations: np.ndarray   # [N, 3] centimetres
    focal: float
    model_scale: np.ndarray    # [3] per-axis scale of the canonical face
    track_points: np.ndarray   # [T, 3] centimetres, world
    iterations: int
    final_loss: float


def _rodrigues(rvecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle [N, 3] → rotation matrices [N, 3, 3] (differentiable, safe at 0)."""
    theta = torch.sqrt((rvecs ** 2).sum(-1, keepdim=True) + 1e-18)
    axis = rvecs / theta
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    theta = theta[..., None]
    eye = torch.eye(3, dtype=rvecs.dtype).expand_as(skew)
    return eye + torch.sin(theta) * skew + (1 - torch.cos(theta)) * (skew @ skew)


def _huber(residual_norm: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(residual_norm < delta, 0.5 * residual_norm ** 2, delta * (residual_norm - 0.5 * delta))


def _cauchy(residual_norm: torch.Tensor, delta: float) -> torch.Tensor:
    """Quadratic near 0, logarithmic beyond `delta`: a landmark that is off by 10 delta weighs almost nothing."""
    return 0.5 * delta ** 2 * torch.log1p((residual_norm / delta) ** 2)


def lift_tracks(tracks: Tracks, model: np.ndarray, triangles: np.ndarray, rotations: np.ndarray,
                translations: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Initial 3D position of each track: its first observation back-projected onto the face mesh posed in that
    frame (barycentric interpolation of the triangle that contains it). Returns (points [T, 3], found [T])."""
    points, found = np.zeros((tracks.n_points, 3)), np.zeros(tracks.n_points, bool)
    first = np.full(tracks.n_points, -1)
    order = np.argsort(tracks.frame_ids, kind="stable")
    for k in order[::-1]:
        first[tracks.point_ids[k]] = k
    for point in range(tracks.n_points):
        k = first[point]
        frame = tracks.frame_ids[k]
        cam = model @ rotations[frame].T + translations[frame]
        uv = cam[:, :2] / cam[:, 2:3] * np.diag(K)[:2] + K[:2, 2]
        a, b, c = uv[triangles[:, 0]], uv[triangles[:, 1]], uv[triangles[:, 2]]
        p = tracks.pixels[k]
        det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        w0 = ((b[:, 1] - c[:, 1]) * (p[0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (p[1] - c[:, 1])) / det
        w1 = ((c[:, 1] - a[:, 1]) * (p[0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (p[1] - c[:, 1])) / det
        w2 = 1 - w0 - w1
        inside = np.flatnonzero((w0 >= 0) & (w1 >= 0) & (w2 >= 0))
        if inside.size == 0:
            continue
        depth = (w0 * cam[triangles[:, 0], 2] + w1 * cam[triangles[:, 1], 2] + w2 * cam[triangles[:, 2], 2])
        t = inside[np.argmin(depth[inside])]  # the visible (nearest) surface
        points[point] = w0[t] * model[triangles[t, 0]] + w1[t] * model[triangles[t, 1]] + w2[t] * model[triangles[t, 2]]
        found[point] = True
    return points, found


def bundle_adjust(model: np.ndarray, rigid_ids: np.ndarray, observed: np.ndarray, observed_valid: np.ndarray,
                  rotations: np.ndarray, translations: np.ndarray, focal: float, width: int, height: int,
                  tracks: Tracks | None = None, track_points: np.ndarray | None = None,
                  smoothness: float = 1.0, track_weight: float = 1.0, iterations: int = 200,
                  refine_focal: bool = True, refine_shape: bool = True,
                  on_evaluation: Callable[[], object] | None = None) -> BundleResult:
    """Refine poses, focal, model proportions and keypoints jointly (see the module docstring).

    Args:
        model: canonical face vertices [V, 3] (cm, world axes).
        rigid_ids: [R] vertex ids observed as landmarks.
        observed: [N, R, 2] landmark pixels; observed_valid: [N, R] bool (observations that count).
        rotations, translations: [N, 3, 3], [N, 3] initial world-to-camera poses (every frame, gaps filled).
        tracks, track_points: optical-flow observations and their initial 3D points [T, 3] (optional).
    """
    dtype = torch.float64
    n = len(rotations)
    import cv2

    rvec0 = np.stack([cv2.Rodrigues(r)[0].ravel() for r in rotations])
    rvecs = torch.tensor(rvec0, dtype=dtype, requires_grad=True)
    tvecs = torch.tensor(translations, dtype=dtype, requires_grad=True)
    log_focal = torch.tensor(np.log(focal), dtype=dtype, requires_grad=refine_focal)
    log_shape = torch.zeros(3, dtype=dtype, requires_grad=refine_shape)
    params = [rvecs, tvecs] + ([log_shape] if refine_shape else []) + ([log_focal] if refine_focal else [])
    model_t = torch.tensor(model, dtype=dtype)
    rigid = torch.as_tensor(rigid_ids, dtype=torch.long)
    anchors = torch.as_tensor(ANCHOR_IDS, dtype=torch.long)
    obs = torch.tensor(observed, dtype=dtype)
    valid = torch.as_tensor(observed_valid, dtype=torch.bool)
    centre = torch.tensor([width / 2, height / 2], dtype=dtype)
    use_tracks = tracks is not None and track_points is not None and len(tracks.frame_ids) > 0
    if use_tracks:
        points = torch.tensor(track_points, dtype=dtype, requires_grad=True)
        params.append(points)
        track_frames = torch.as_tensor(tracks.frame_ids, dtype=torch.long)
        track_ids = torch.as_tensor(tracks.point_ids, dtype=torch.long)
        track_pixels = torch.tensor(tracks.pixels, dtype=dtype)

    def project(world: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        cam = world @ rot.transpose(-1, -2) + trans[..., None, :]
        return cam[..., :2] / cam[..., 2:3].clamp_min(1e-3) * f + centre

    def objective() -> torch.Tensor:
        rot = _rodrigues(rvecs)
        f = torch.exp(log_focal)
        shape = torch.exp(log_shape - log_shape.mean())        # proportions only; mean log-scale is gauge
        scaled = model_t * shape
        landmarks = project(scaled[rigid].expand(n, -1, -1), rot, tvecs, f)
        residual = torch.linalg.norm(landmarks - obs, dim=-1)[valid]
        loss = _cauchy(residual, 2.0).mean()
        if use_tracks:
            seen = project(points[track_ids][:, None, :], rot[track_frames], tvecs[track_frames], f)[:, 0]
            loss = loss + track_weight * _huber(torch.linalg.norm(seen - track_pixels, dim=-1), 1.0).mean()
        if smoothness > 0 and n >= 3:
            motion = project(scaled[anchors].expand(n, -1, -1), rot, tvecs, f)
            accel = motion[2:] - 2 * motion[1:-1] + motion[:-2]
            loss = loss + smoothness * (accel ** 2).sum(-1).mean()
        return loss

    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=50,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        if on_evaluation is not None:  # progress: L-BFGS evaluates the objective up to 1.25 x iterations times
            on_evaluation()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        final = float(objective())
        shape = torch.exp(log_shape - log_shape.mean()).numpy()
        rot = _rodrigues(rvecs).numpy()
        focal_out = float(torch.exp(log_focal))
    state = optimizer.state[optimizer._params[0]]
    return BundleResult(rot, tvecs.detach().numpy().copy(), focal_out, shape,
                        points.detach().numpy().copy() if use_tracks else np.zeros((0, 3)),
                        int(state.get("n_iter", 0)), final)
