"""Step `torso_track`: the 2D motion of the torso in every frame, so the torso model can follow the body.

The shoulders sway on their own (on the Macron clip by 3–5 px at 256 px), and the head pose does not predict it,
so a torso drawn from the head pose alone sits a few pixels off and blurs into a mean. Like the head pose, the
torso's motion is measured on each frame: an affine map from a canonical template to the frame, found by ECC
image alignment (``cv2.findTransformECC``, coarse to fine) over the neck + torso and a band of background around
its outline (where the suit's edge is), the head left out, against a template: the frame nearest the middle of the
clip. (Aligning again against the mean of the aligned frames gained nothing on the Macron clip: 26.83 against
26.85 dB for the held-out torso predicted by the aligned mean, at three times the time.) Canonical coordinates are
the body's average place: the tracks average to the identity.

Frames without a torso, or where the alignment fails or runs away, take their neighbours' track (interpolated).
Output: ``[N, 2, 3]`` affine maps canonical → frame in normalised coordinates (``synctalk.models.torso``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from synctalk.data.contract import HEAD_LABELS, TORSO_LABELS
from synctalk.errors import ConfigError

log = logging.getLogger("synctalk.preprocess")

MOTIONS = ("affine", "euclidean", "translation", "none")
TRACK_SIDE = 256       # frames are tracked at most this large (the track is resolution-free)
EDGE_BAND_PX = 5       # background band kept around the body's outline (ECC erodes its mask by ~2 px)
HEAD_MARGIN_PX = 4     # head pixels dilated by this much are left out (the head moves on its own)
PYRAMID = (4, 2, 1)    # alignment scales, coarse to fine (divisors of the tracked size)
MIN_REGION_PX = 50     # fewer pixels to align on: the frame takes its neighbours' track
MAX_LINEAR = 0.25      # a track whose linear part strays further from the identity is a failure
MAX_SHIFT = 0.2        # ... or that moves more than this fraction of the side


@dataclass
class TorsoTrack:
    """``tracks`` [N, 2, 3] float32 (normalised, canonical → frame), ``correlation`` [N] (ECC score, NaN where
    the frame took its neighbours' track), ``template`` [h, w] float32 grey template frame at the tracked size."""

    tracks: np.ndarray
    correlation: np.ndarray
    template: np.ndarray

    @property
    def failed(self) -> np.ndarray:
        return np.isnan(self.correlation)

    def stats(self, width: int) -> dict:
        """Summary for meta.json: spread of the motion in pixels of a ``width`` frame, failures."""
        shift = self.tracks[:, :, 2] * width / 2
        return {"shift_std_px": [round(float(v), 2) for v in shift.std(0)],
                "scale_range": [round(float(v), 4) for v in _scales(self.tracks)[[0, -1]]],
                "interpolated_frames": int(self.failed.sum()),
                "mean_correlation": round(float(np.nanmean(self.correlation)), 4) if (~self.failed).any() else None}


def _scales(tracks: np.ndarray) -> np.ndarray:
    return np.sort(np.sqrt(np.abs(np.linalg.det(tracks[:, :, :2]))))


def track_region(labels: np.ndarray) -> np.ndarray:
    """uint8 mask of what the alignment looks at: neck + torso grown by a background band (the outline is the
    strongest cue), head (grown) removed."""
    import cv2

    body = np.isin(labels, TORSO_LABELS).astype(np.uint8)
    head = np.isin(labels, HEAD_LABELS).astype(np.uint8)

    def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
        return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1)))

    return grow(body, EDGE_BAND_PX) & (1 - grow(head, HEAD_MARGIN_PX))


def track_torso(n_frames: int, frame: Callable[[int], tuple[np.ndarray, np.ndarray]], motion: str = "affine",
                workers: int = 2, progress: bool = True) -> TorsoTrack:
    """Track the torso of ``n_frames`` frames.

    Args:
        frame: ``i`` → ``(rgb [H, W, 3] uint8, labels [H, W] uint8)``.
        motion: ``affine`` (6 parameters), ``euclidean`` (shift + rotation), ``translation``, or ``none``
            (identity tracks, for ablations).
    """
    import cv2

    from synctalk.progress import track

    if motion not in MOTIONS:
        raise ConfigError(f"preprocess.torso_track_motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
    identity = np.tile(np.eye(2, 3, dtype=np.float32), (n_frames, 1, 1))
    if motion == "none" or n_frames == 0:
        return TorsoTrack(identity, np.full(n_frames, np.nan, np.float32), np.zeros((0, 0), np.float32))
    mode = {"affine": cv2.MOTION_AFFINE, "euclidean": cv2.MOTION_EUCLIDEAN,
            "translation": cv2.MOTION_TRANSLATION}[motion]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb, labels = frame(i)
        h, w = labels.shape
        scale = min(1.0, TRACK_SIDE / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        return grey.astype(np.float32) / 255, cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)

    from synctalk.data.affine import normalized_affine, pixel_affine

    def align(template: np.ndarray, i: int) -> tuple[np.ndarray, float]:
        """Coarse to fine (a quarter, half, full size), so motions of several pixels converge too."""
        grey, labels = load(i)
        if track_region(labels).sum() < MIN_REGION_PX:
            return identity[i], np.nan
        track, score = identity[i].astype(np.float64), np.nan
        for factor in PYRAMID:
            h, w = (max(1, round(n / factor)) for n in grey.shape)
            if factor > 1 and min(h, w) < 32:
                continue
            level = [cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) for image in (template, grey)]
            level.append(track_region(cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)))
            warp = pixel_affine(track, w, h).astype(np.float32)
            try:
                score, warp = cv2.findTransformECC(*level[:2], warp, mode, criteria, level[2], 5 if factor == 1 else 3)
            except cv2.error:
                score = np.nan
                continue
            track = normalized_affine(warp.astype(np.float64), w, h)
        if np.isnan(score) or np.abs(track[:, :2] - np.eye(2)).max() > MAX_LINEAR or \
                np.abs(track[:, 2]).max() > 2 * MAX_SHIFT:
            return identity[i], np.nan
        return track.astype(np.float32), float(score)

    template_frame = _template_frame(n_frames, lambda i: track_region(load(i)[1]).sum() >= MIN_REGION_PX)
    if template_frame is None:
        log.warning("no frame shows a torso to track; the torso model will not follow the body")
        return TorsoTrack(identity, np.full(n_frames, np.nan, np.float32), np.zeros((0, 0), np.float32))
    template = load(template_frame)[0]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(track(pool.map(lambda i: align(template, i), range(n_frames)), "torso track",
                             total=n_frames, unit="frame", enabled=progress, leave=False))
    correlation = np.array([c for _, c in results], np.float32)
    if np.isnan(correlation).all():
        log.warning("the torso could not be aligned in any frame; the torso model will not follow the body")
        return TorsoTrack(identity, correlation, template)
    tracks = _centred(np.stack([t for t, _ in results]), ~np.isnan(correlation))
    return TorsoTrack(_fill_gaps(tracks, np.isnan(correlation)), correlation, template)


def _template_frame(n_frames: int, has_torso: Callable[[int], bool]) -> int | None:
    """The frame nearest the middle of the clip that shows a torso."""
    middle = n_frames // 2
    for i in sorted(range(n_frames), key=lambda k: abs(k - middle)):
        if has_torso(i):
            return i
    return None


def _centred(tracks: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The tracks re-expressed so that their mean over usable frames is the identity: canonical coordinates are the
    body's average place (also what a render without a track shows)."""
    from synctalk.data.affine import homogeneous

    return (homogeneous(tracks) @ np.linalg.inv(homogeneous(tracks[usable].mean(0))))[:, :2].astype(np.float32)


def _fill_gaps(tracks: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Failed frames' tracks interpolated linearly from the nearest good frames (held at the ends)."""
    good = np.flatnonzero(~failed)
    if len(good) == len(tracks) or len(good) == 0:
        return tracks
    flat = tracks.reshape(len(tracks), -1)
    frames = np.arange(len(tracks))
    filled = np.stack([np.interp(frames, good, flat[good, k]) for k in range(flat.shape[1])], axis=1)
    return filled.reshape(tracks.shape).astype(np.float32)
