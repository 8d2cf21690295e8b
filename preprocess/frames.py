"""Step `frames`: normalise the video (any container, fps, rotation, size) and crop it around the face.

One fixed square crop is chosen for the whole clip from a face search over sampled frames (MediaPipe's
full-range face detector, inside the mediapipe wheel), so wide shots with a small face and already-cropped
512x512 clips both come out framed like the usual talking-head datasets. The crop is kept in meta.json so renders
can be pasted back into the original frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.errors import MediaError
from synctalk.io.media import MediaInfo, read_frames

log = logging.getLogger("synctalk.preprocess")

DETECT_MAX_SIDE = 640   # the detector sees 192x192 anyway; shrinking 4K frames first saves decoding time
DETECT_MIN_SIDE = 256   # enlarge tiny inputs so a face a few dozen pixels high is still found
SNAP_TO_FULL = 0.9      # an ideal crop this close to the frame's short side becomes the whole short side


@dataclass(frozen=True)
class FaceBox:
    """A face detection in source pixels: centre, size, score."""

    cx: float
    cy: float
    width: float
    height: float
    score: float


@dataclass(frozen=True)
class Crop:
    """Square crop in source pixels: source pixel = crop pixel * side / size + (x0, y0)."""

    x0: int
    y0: int
    side: int

    def to_meta(self, info: MediaInfo) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side, "source_width": info.width,
                "source_height": info.height}


def detect_faces(video: Path, info: MediaInfo, every_s: float) -> list[list[FaceBox]]:
    """Faces in frames sampled every `every_s` seconds: one list of FaceBox (source pixels) per sample."""
    import cv2

    from synctalk.runtime import import_mediapipe, native_stderr_captured

    mp = import_mediapipe()
    long_side = max(info.width, info.height)
    scale = min(DETECT_MAX_SIDE / long_side, 1.0)
    if min(info.width, info.height) * scale < DETECT_MIN_SIDE:
        scale = DETECT_MIN_SIDE / min(info.width, info.height)
    size = (max(2, int(round(info.width * scale))), max(2, int(round(info.height * scale))))
    samples: list[list[FaceBox]] = []
    with native_stderr_captured(), mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.5) as detector:
        for frame in read_frames(video, fps=1.0 / every_s, info=info):
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            result = detector.process(small)
            boxes = []
            for det in result.detections or []:
                b = det.location_data.relative_bounding_box
                boxes.append(FaceBox(cx=(b.xmin + b.width / 2) * info.width, cy=(b.ymin + b.height / 2) * info.height,
                                     width=b.width * info.width, height=b.height * info.height, score=det.score[0]))
            samples.append(boxes)
    return samples


def main_subject(samples: list[list[FaceBox]]) -> list[FaceBox | None]:
    """Per sample, the face of the main subject: the one closest to where the largest faces are, over the clip
    (a passer-by or a face on a poster does not move the crop)."""
    largest = [max(boxes, key=lambda b: b.width * b.height) for boxes in samples if boxes]
    if not largest:
        return [None] * len(samples)
    centre = np.median([[b.cx, b.cy] for b in largest], axis=0)
    return [min(boxes, key=lambda b: np.hypot(b.cx - centre[0], b.cy - centre[1])) if boxes else None
            for boxes in samples]


def choose_crop(faces: list[FaceBox], info: MediaInfo, face_fraction: float) -> Crop:
    """The clip's square crop: the median face box is `face_fraction` of the side and centred, clamped inside
    the frame (when the ideal crop is about the frame's short side or larger, the whole short side is used)."""
    cx = float(np.median([f.cx for f in faces]))
    cy = float(np.median([f.cy for f in faces]))
    face_h = float(np.median([f.height for f in faces]))
    short = min(info.width, info.height)
    side = int(round(min(face_h / face_fraction, short)))
    if side > SNAP_TO_FULL * short:  # already framed (e.g. a 512x512 dataset clip): keep it, don't resample
        side = short
    x0 = int(round(np.clip(cx - side / 2, 0, info.width - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, info.height - side)))
    return Crop(x0, y0, side)


def find_crop(video: Path, info: MediaInfo, face_fraction: float, every_s: float) -> tuple[Crop, dict]:
    """Search the clip for the face and choose the crop. Raises MediaError when no face is found anywhere."""
    samples = detect_faces(video, info, every_s)
    faces = [f for f in main_subject(samples) if f is not None]
    if not faces:
        raise MediaError(f"{video}: no face found in any of the {len(samples)} frames sampled every {every_s:g} s. "
                         f"synctalk needs a video of one person facing the camera with the face visible "
                         f"(at least ~40 pixels high).")
    crop = choose_crop(faces, info, face_fraction)
    stats = {"sampled_frames": len(samples), "frames_with_face": len(faces),
             "multiple_faces": sum(len(s) > 1 for s in samples),
             "face_height_px": float(np.median([f.height for f in faces]))}
    return crop, stats


def write_frames(video: Path, info: MediaInfo, crop: Crop, subject, fps: float, size: int, workers: int,
                 max_frames: int | None = None, progress: bool = True) -> int:
    """Decode at `fps`, crop, resize to `size`x`size` and write frames/NNNNNN.jpg. Returns the frame count."""
    from synctalk.progress import Progress

    expected = int(round(info.duration_s * fps)) if max_frames is None else max_frames
    frames = read_frames(video, fps=fps, info=info, crop=(crop.x0, crop.y0, crop.side, crop.side),
                         size=(size, size), max_frames=max_frames)
    with Progress("frames", frames, total=expected, unit="frame", enabled=progress, leave=False) as stream:
        count = subject.write_frames("frames", stream, workers)
    if count == 0:
        raise MediaError(f"{video}: no frames could be decoded")
    return count


def crop_picture(video: Path, info: MediaInfo, crop: Crop, path: Path) -> None:
    """QA: a source frame from the middle of the clip with the crop box drawn."""
    import cv2

    from synctalk.io.images import write_image

    middle = info.duration_s / 2
    frame = None
    for i, f in enumerate(read_frames(video, fps=1.0, info=info)):
        frame = f
        if i >= middle:
            break
    if frame is None:
        return
    frame = frame.copy()
    thickness = max(2, int(round(max(info.width, info.height) / 300)))
    cv2.rectangle(frame, (crop.x0, crop.y0), (crop.x0 + crop.side - 1, crop.y0 + crop.side - 1), (255, 40, 40),
                  thickness)
    scale = min(1.0, 720 / max(frame.shape[:2]))
    if scale < 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    write_image(path, frame)
