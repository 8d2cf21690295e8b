"""Step `landmarks`: MediaPipe Face Landmarker in video mode → 478 landmarks, 52 blendshapes and the face
transformation matrix per frame; gaps without a face are interpolated (short) or flagged (long); a zero-lag
temporal filter removes tracker jitter without delaying mouth motion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from synctalk.data.contract import FACE_DETECTED, FACE_INTERPOLATED, FACE_MISSING, N_BLENDSHAPES, N_LANDMARKS

log = logging.getLogger("synctalk.preprocess")


@dataclass
class FaceTrack:
    """Per-frame face tracking of a clip of N frames."""

    landmarks: np.ndarray       # [N, 478, 3] float32, pixels (z in the same pixel scale)
    blendshapes: np.ndarray     # [N, 52] float32 in [0, 1]
    transforms: np.ndarray      # [N, 4, 4] float32, MediaPipe facial transformation matrices
    flags: np.ndarray           # [N] uint8: FACE_MISSING / FACE_DETECTED / FACE_INTERPOLATED

    def gaps(self, flag: int = FACE_MISSING) -> list[tuple[int, int]]:
        """Runs of frames with `flag`, as inclusive (first, last) index pairs."""
        return runs(self.flags == flag)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index pairs of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


class FaceLandmarker:
    """MediaPipe Face Landmarker (`face_landmarker.task` from the asset cache) in video mode.

    Keeps following one subject: when several faces are found, the one closest to the previous frame's face
    (or, at the start, to the image centre) is kept.
    """

    def __init__(self, fps: float, model_path=None, max_faces: int = 2):
        from synctalk import assets
        from synctalk.runtime import import_mediapipe, native_stderr_captured

        self._mp = import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        path = model_path or assets.fetch("face_landmarker")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), running_mode=vision.RunningMode.VIDEO,
            num_faces=max_faces, output_face_blendshapes=True, output_facial_transformation_matrixes=True,
            min_face_detection_confidence=0.5, min_face_presence_confidence=0.5, min_tracking_confidence=0.5)
        with native_stderr_captured():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._quiet = native_stderr_captured
        self.fps = fps
        self._index = 0
        self._previous_centre: np.ndarray | None = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._landmarker.close()

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Track the next frame (frames must come in order). Returns (landmarks [478, 3] px, blendshapes [52],
        transform [4, 4]) or None when no face is found."""
        height, width = rgb.shape[:2]
        timestamp_ms = int(round(self._index * 1000.0 / self.fps))
        self._index += 1
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with self._quiet():
            result = self._landmarker.detect_for_video(image, timestamp_ms)
        if not result.face_landmarks:
            return None
        faces = [np.array([[p.x * width, p.y * height, p.z * width] for p in face], np.float32)
                 for face in result.face_landmarks]
        reference = self._previous_centre if self._previous_centre is not None else np.array([width / 2, height / 2])
        best = min(range(len(faces)), key=lambda k: np.linalg.norm(faces[k][:, :2].mean(axis=0) - reference))
        self._previous_centre = faces[best][:, :2].mean(axis=0)
        blend = np.array([c.score for c in result.face_blendshapes[best]], np.float32)
        transform = np.asarray(result.facial_transformation_matrixes[best], np.float32)
        return faces[best], blend, transform


def track_faces(frames: Iterable[np.ndarray], n_frames: int, fps: float, progress: bool = True,
                model_path=None) -> FaceTrack:
    """Run the landmarker over a clip's frames (in order). Frames without a face get FACE_MISSING."""
    from synctalk.progress import track

    landmarks = np.zeros((n_frames, N_LANDMARKS, 3), np.float32)
    blendshapes = np.zeros((n_frames, N_BLENDSHAPES), np.float32)
    transforms = np.tile(np.eye(4, dtype=np.float32), (n_frames, 1, 1))
    flags = np.full(n_frames, FACE_MISSING, np.uint8)
    with FaceLandmarker(fps, model_path) as landmarker:
        for index, frame in enumerate(track(frames, "landmarks", total=n_frames, unit="frame", enabled=progress,
                                            leave=False)):
            found = landmarker(frame)
            if found is not None:
                landmarks[index], blendshapes[index], transforms[index] = found
                flags[index] = FACE_DETECTED
    return FaceTrack(landmarks, blendshapes, transforms, flags)


def fill_gaps(track: FaceTrack, max_gap: int) -> FaceTrack:
    """Interpolate runs of at most `max_gap` missing frames (linearly between the faces on either side, or by
    holding the nearest face at the clip's ends) and flag them FACE_INTERPOLATED. Longer runs stay
    FACE_MISSING; their arrays hold the nearest face so that nothing downstream sees zeros or NaN."""
    out = FaceTrack(track.landmarks.copy(), track.blendshapes.copy(), track.transforms.copy(), track.flags.copy())
    valid = np.flatnonzero(track.flags != FACE_MISSING)
    if valid.size == 0:
        return out
    n = len(track.flags)
    arrays = (out.landmarks, out.blendshapes, out.transforms)
    for first, last in track.gaps(FACE_MISSING):
        before = first - 1 if first > 0 else None
        after = last + 1 if last < n - 1 else None
        for index in range(first, last + 1):
            if before is not None and after is not None:
                w = (index - before) / (after - before)
                for array in arrays:
                    array[index] = (1 - w) * array[before] + w * array[after]
            else:
                source = after if before is None else before
                for array in arrays:
                    array[index] = array[source]
        if last - first + 1 <= max_gap:
            out.flags[first:last + 1] = FACE_INTERPOLATED
    return out


def smooth_track(track: FaceTrack, window: int) -> FaceTrack:
    """Zero-phase Savitzky-Golay filter (polynomial order 2) over time on landmarks and blendshapes, inside each
    run of frames with a face. Symmetric, so mouth motion is not delayed; order 2 keeps the height of
    short peaks (a syllable, a blink) that a moving average would flatten."""
    from scipy.signal import savgol_filter

    out = FaceTrack(track.landmarks.copy(), track.blendshapes.copy(), track.transforms, track.flags)
    if window < 3:
        return out
    window += 1 - window % 2  # odd
    for first, last in runs(track.flags != FACE_MISSING):
        length = last - first + 1
        w = min(window, length - 1 + length % 2)
        if w < 3:
            continue
        segment = slice(first, last + 1)
        out.landmarks[segment] = savgol_filter(track.landmarks[segment], w, 2, axis=0)
        out.blendshapes[segment] = np.clip(savgol_filter(track.blendshapes[segment], w, 2, axis=0), 0, 1)
    return out
