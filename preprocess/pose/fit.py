"""Per-frame rigid head fit (PnP of the canonical rigid landmarks) and the clip's focal-length search.

Poses are world-to-camera `(R, t)`: `x_cam = R @ x_world + t`, world = canonical face axes (x right, y down,
z into the face, centimetres), camera = OpenCV axes. Pixel coordinates follow docs/dataset.md.
"""

from __future__ import annotations

import numpy as np


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """Pinhole K with square pixels and the principal point at the image centre (continuous coordinates)."""
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)


def project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project world points `[P, 3]` with one pose → pixels `[P, 2]`."""
    cam = points @ rotation.T + translation
    return (cam[:, :2] / cam[:, 2:3]) * np.diag(K)[:2] + K[:2, 2]


def fit_pose(model: np.ndarray, observed: np.ndarray, K: np.ndarray,
             initial: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """World-to-camera (R [3, 3], t [3]) fitting `model` `[P, 3]` to pixels `observed` `[P, 2]`, and the RMS
    reprojection error (px). SQPnP (global) first, then Levenberg-Marquardt refinement."""
    import cv2

    model = np.ascontiguousarray(model, np.float64)
    observed = np.ascontiguousarray(observed, np.float64)
    if initial is None:
        ok, rvec, tvec = cv2.solvePnP(model, observed, K, None, flags=cv2.SOLVEPNP_SQPNP)
    else:
        rvec, tvec = cv2.Rodrigues(initial[0])[0], initial[1].reshape(3, 1).copy()
        ok = True
    if not ok or tvec[2, 0] <= 0:  # degenerate: start from a frontal face at a plausible distance
        rvec, tvec = np.zeros((3, 1)), np.array([[0.0], [0.0], [K[0, 0] * 15.0 / max(np.ptp(observed[:, 1]), 1)]])
    rvec, tvec = cv2.solvePnPRefineLM(model, observed, K, None, rvec, tvec)
    rotation = cv2.Rodrigues(rvec)[0]
    error = project(model, rotation, tvec.ravel(), K) - observed
    return rotation, tvec.ravel(), float(np.sqrt((error ** 2).sum(axis=1).mean()))


def fit_poses(model: np.ndarray, observed: np.ndarray, K: np.ndarray, inliers: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent per-frame fits for `observed` `[N, P, 2]` (only `inliers` `[N, P]` points, when given):
    rotations [N, 3, 3], translations [N, 3], RMS errors [N] over the points used. Each frame starts from the
    previous frame's pose, which keeps the fits on one solution branch."""
    n = len(observed)
    rotations, translations, errors = np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n)
    previous = None
    for i in range(n):
        use = inliers[i] if inliers is not None and inliers[i].sum() >= 6 else slice(None)
        rotations[i], translations[i], errors[i] = fit_pose(model[use], observed[i][use], K, previous)
        if errors[i] > 5 * max(np.median(errors[: i + 1]), 0.5):  # a bad warm start: retry from scratch
            candidate = fit_pose(model[use], observed[i][use], K)
            if candidate[2] < errors[i]:
                rotations[i], translations[i], errors[i] = candidate
        previous = (rotations[i], translations[i])
    return rotations, translations, errors


def inlier_mask(model: np.ndarray, observed: np.ndarray, rotations: np.ndarray, translations: np.ndarray,
                K: np.ndarray, min_px: float = 1.5) -> np.ndarray:
    """[N, P] True where a landmark's reprojection error is below max(4 robust sigmas, `min_px`): drops the
    gross errors (a contour point that jumped) that bias least-squares fits."""
    residual = np.stack([np.linalg.norm(project(model, r, t, K) - o, axis=1)
                         for r, t, o in zip(rotations, translations, observed, strict=True)])
    sigma = 1.4826 * np.median(residual)
    return residual < max(4.0 * sigma, min_px)


def search_focal(model: np.ndarray, observed: np.ndarray, width: int, height: int,
                 focal_range: tuple[float, float], n_frames: int = 60,
                 inliers: np.ndarray | None = None) -> tuple[float, dict]:
    """Focal length (px) minimising the clip's rigid-landmark reprojection error, from a coarse log-spaced
    scan over `focal_range` (multiples of the image width) on up to `n_frames` frames spread over the clip,
    refined by golden-section search. Returns the focal and the scan (for the QA report)."""
    picks = np.unique(np.linspace(0, len(observed) - 1, min(n_frames, len(observed))).round().astype(int))
    masks = inliers[picks] if inliers is not None else np.ones(observed[picks].shape[:2], bool)

    def cost(focal: float) -> float:
        K = intrinsics(focal, width, height)
        return float(np.mean([fit_pose(model[m], obs[m], K)[2] ** 2 for obs, m in zip(observed[picks], masks,
                                                                                       strict=True)]))

    grid = np.geomspace(focal_range[0] * width, focal_range[1] * width, 15)
    costs = np.array([cost(f) for f in grid])
    best = int(np.argmin(costs))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    cost_a, cost_b = cost(a), cost(b)
    for _ in range(12):
        if cost_a < cost_b:
            high, b, cost_b = b, a, cost_a
            a = low + (1 - ratio) * (high - low)
            cost_a = cost(a)
        else:
            low, a, cost_a = a, b, cost_b
            b = low + ratio * (high - low)
            cost_b = cost(b)
    focal = (low + high) / 2
    return float(focal), {"scan_focal_px": grid.round(1).tolist(), "scan_rms_px": np.sqrt(costs).round(4).tolist()}
