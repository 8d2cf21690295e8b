"""Sparse keypoint tracks on the rigid part of the head (forehead, nose, upper cheeks, temples), with
pyramidal Lucas-Kanade optical flow, a forward-backward check, and re-seeding when points are lost.

Tracks give the bundle adjustment many more rigid observations per frame than the 33 landmarks, and they are
measured on image texture, independently of the landmark network's frame-to-frame jitter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Face-mesh outline of the rigid region: forehead and temples down to the cheekbones, around the nose; the
# eyes (blinks) and everything below the nose (mouth, jaw) are left out.
RIGID_OUTLINE = (10, 338, 297, 332, 284, 251, 389, 356, 454, 345, 346, 347, 348, 349, 350, 351, 6, 122, 121, 120,
                 119, 118, 117, 116, 234, 127, 162, 21, 54, 103, 67, 109)
EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
        (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398))


@dataclass
class Tracks:
    """Observations of tracked points: point `point_ids[k]` seen in frame `frame_ids[k]` at `pixels[k]`."""

    frame_ids: np.ndarray   # [M] int64
    point_ids: np.ndarray   # [M] int64
    pixels: np.ndarray      # [M, 2] float64
    n_points: int

    def lengths(self) -> np.ndarray:
        return np.bincount(self.point_ids, minlength=self.n_points)


def rigid_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask of the rigid head region of one frame (255 inside), eyes cut out and slightly eroded."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[list(RIGID_OUTLINE), :2]).astype(np.int32)], 255)
    for eye in EYES:
        hull = cv2.convexHull(np.round(landmarks[list(eye), :2]).astype(np.int32))
        cv2.fillPoly(mask, [hull], 0)
        cv2.polylines(mask, [hull], True, 0, thickness=max(3, shape[0] // 100))
    return cv2.erode(mask, np.ones((5, 5), np.uint8))


def track_keypoints(frames: Iterable[np.ndarray], landmarks: np.ndarray, valid: np.ndarray, max_points: int = 80,
                    fb_threshold_px: float = 0.7, min_length: int = 5) -> Tracks:
    """Track corners inside the rigid region through the clip.

    A point is dropped when its forward-backward flow error exceeds `fb_threshold_px`, when it leaves the rigid
    region, or in a frame without a valid face; new points are seeded whenever fewer than half of
    `max_points` remain. Tracks shorter than `min_length` frames are discarded.
    """
    import cv2

    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    frames_out, points_out, pixels_out = [], [], []
    previous_gray, current, ids = None, np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    next_id = 0
    for index, frame in enumerate(frames):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if not valid[index]:
            previous_gray, current, ids = gray, np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
            continue
        mask = rigid_mask(landmarks[index], gray.shape)
        if previous_gray is not None and len(current):
            forward, status, _ = cv2.calcOpticalFlowPyrLK(previous_gray, gray, current, None, **lk)
            backward, status_back, _ = cv2.calcOpticalFlowPyrLK(gray, previous_gray, forward, None, **lk)
            fb_error = np.linalg.norm(backward - current, axis=1)
            xy = np.round(forward).astype(int)
            inside = ((xy[:, 0] >= 0) & (xy[:, 0] < gray.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < gray.shape[0]))
            keep = status.ravel().astype(bool) & status_back.ravel().astype(bool) & (fb_error < fb_threshold_px)
            keep &= inside
            keep[keep] &= mask[xy[keep, 1], xy[keep, 0]] > 0
            current, ids = forward[keep], ids[keep]
        if len(current) < max_points // 2:
            seed_mask = mask.copy()
            for x, y in current:
                cv2.circle(seed_mask, (int(x), int(y)), 7, 0, -1)
            corners = cv2.goodFeaturesToTrack(gray, maxCorners=max_points - len(current), qualityLevel=0.005,
                                              minDistance=7, mask=seed_mask, blockSize=7)
            if corners is not None:
                corners = corners.reshape(-1, 2)
                current = np.concatenate([current, corners]).astype(np.float32)
                ids = np.concatenate([ids, np.arange(next_id, next_id + len(corners))])
                next_id += len(corners)
        frames_out.append(np.full(len(ids), index))
        points_out.append(ids.copy())
        pixels_out.append(current.astype(np.float64))
        previous_gray = gray
    if not frames_out:
        return Tracks(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), 0)
    frame_ids, point_ids, pixels = np.concatenate(frames_out), np.concatenate(points_out), np.concatenate(pixels_out)
    lengths = np.bincount(point_ids, minlength=next_id)
    keep = lengths[point_ids] >= min_length
    _, point_ids = np.unique(point_ids[keep], return_inverse=True)  # renumber 0..T-1
    return Tracks(frame_ids[keep], point_ids, pixels[keep], int(point_ids.max()) + 1 if keep.any() else 0)
