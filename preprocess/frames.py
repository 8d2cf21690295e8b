"""Step `frames`: normalise the video (any container, fps, rotation, size) and crop it around the face.

One fixed square crop is chosen for the whole clip from a face search over sampled frames (MediaPipe's
full-range face detector, inside the mediapipe wheel), so wide shots with a small face and already-cropped
512x512 clips both come out framed like the usual talking-head datasets. The crop is kept in meta.json so renders
can be pasted back into the original frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.errors import MediaError, UserInputError
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


def detect_faces(video: Path, info: MediaInfo, every_s: float,
                 on_sample: Callable[[], object] | None = None) -> list[list[FaceBox]]:
    """Faces in frames sampled every `every_s` seconds: one list of FaceBox (source pixels) per sample
    (`on_sample()` is called after each, for progress)."""
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
            if on_sample is not None:
                on_sample()
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


@dataclass
class FaceCandidate:
    """One face followed over the sampled frames of the face search (faces matched by position)."""

    boxes: list[FaceBox | None]   # per sample
    number: int = 0               # 1 = the leftmost face, 2 = the next...

    @property
    def present(self) -> float:
        return sum(b is not None for b in self.boxes) / max(1, len(self.boxes))

    def median(self, attr: str) -> float:
        return float(np.median([getattr(b, attr) for b in self.boxes if b is not None]))

    def describe(self) -> str:
        return (f"face {self.number} (x {self.median('cx'):.0f} px, {self.median('height'):.0f} px high, in "
                f"{self.present:.0%} of the sampled frames)")


def face_candidates(samples: list[list[FaceBox]], min_present: float = 0.3) -> list[FaceCandidate]:
    """The faces seen in at least `min_present` of the samples, followed by position (a face that moves less than
    its own height between samples is the same face), numbered from the left."""
    tracks: list[FaceCandidate] = []
    for k, boxes in enumerate(samples):
        taken: set[int] = set()
        for box in sorted(boxes, key=lambda b: -b.width * b.height):
            best, best_distance = None, np.inf
            for t, track in enumerate(tracks):
                last = next((b for b in reversed(track.boxes) if b is not None), None)
                distance = np.hypot(box.cx - last.cx, box.cy - last.cy)
                if t not in taken and distance < max(box.height, last.height) and distance < best_distance:
                    best, best_distance = t, distance
            if best is None:
                tracks.append(FaceCandidate([None] * k + [box]))
                taken.add(len(tracks) - 1)
            else:
                tracks[best].boxes.append(box)
                taken.add(best)
        for track in tracks:
            track.boxes.extend([None] * (k + 1 - len(track.boxes)))
    kept = sorted((t for t in tracks if t.present >= min_present), key=lambda t: t.median("cx"))
    for number, track in enumerate(kept, 1):
        track.number = number
    return kept


def speaking_scores(video: Path, info: MediaInfo, candidates: list[FaceCandidate], speech: np.ndarray,
                    sample_rate_hz: int, fps: float = 12.5, max_seconds: float = 20.0,
                    progress: bool = True) -> list[float]:
    """How well each face's mouth follows the speech: the correlation, over the first `max_seconds` at `fps`, of
    its jawOpen (MediaPipe blendshape, on a crop around the face) with the loudness of the audio. The speaker
    scores clearly above 0; a listener or a photo near 0."""
    import cv2

    from synctalk.data.contract import BLENDSHAPE_NAMES
    from synctalk.face.landmarks import FaceLandmarker
    from synctalk.progress import track

    n = int(min(info.duration_s, max_seconds) * fps)
    hop = sample_rate_hz / fps
    loudness = np.array([np.sqrt(np.mean(np.square(speech[int(i * hop):int((i + 1) * hop)], dtype=np.float64)))
                         if int(i * hop) < len(speech) else 0.0 for i in range(n)])
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    crops = []
    for c in candidates:
        side = int(round(2.2 * c.median("height")))
        x0 = int(round(np.clip(c.median("cx") - side / 2, 0, max(0, info.width - side))))
        y0 = int(round(np.clip(c.median("cy") - side / 2, 0, max(0, info.height - side))))
        crops.append((x0, y0, min(side, info.width, info.height)))
    landmarkers = [FaceLandmarker(fps, max_faces=1) for _ in candidates]
    opening = np.full((len(candidates), n), np.nan)
    try:
        frames = read_frames(video, fps=fps, info=info, max_frames=n)
        for i, frame in enumerate(track(frames, "frames: which face speaks", total=n, unit="frame",
                                        enabled=progress, leave=False)):
            for k, (x0, y0, side) in enumerate(crops):
                crop = cv2.resize(frame[y0:y0 + side, x0:x0 + side], (256, 256), interpolation=cv2.INTER_AREA)
                found = landmarkers[k](np.ascontiguousarray(crop))
                if found is not None:
                    opening[k, i] = found[1][jaw]
    finally:
        for landmarker in landmarkers:
            landmarker.close()
    scores = []
    for k in range(len(candidates)):
        valid = np.isfinite(opening[k])
        if valid.sum() < 8 or np.std(opening[k, valid]) < 1e-6 or np.std(loudness[valid]) < 1e-9:
            scores.append(0.0)
        else:
            scores.append(float(np.corrcoef(opening[k, valid], loudness[valid])[0, 1]))
    return scores


SPEAKING_MIN = 0.2      # the speaker's jawOpen/loudness correlation must be at least this...
SPEAKING_MARGIN = 0.15  # ...and this much above every other face's


def choose_face(video: Path, info: MediaInfo, candidates: list[FaceCandidate], choice: str | int,
                speech: Callable[[], tuple[np.ndarray, int]] | None, progress: bool = True
                ) -> tuple[FaceCandidate, str, dict]:
    """The subject among several faces, the reason, and stats: `choice` "auto" (the face whose mouth moves with
    the speech; the largest when that is unclear), "largest", or a face number (1 = leftmost)."""
    largest = max(candidates, key=lambda c: (c.median("height"), c.present))
    if isinstance(choice, int) and not isinstance(choice, bool):
        if not 1 <= choice <= len(candidates):
            raise UserInputError(f"preprocess.face={choice}: the clip has {len(candidates)} face(s) "
                                 f"({'; '.join(c.describe() for c in candidates)}); give 1 to {len(candidates)} "
                                 f"(numbered from the left), largest or auto")
        return candidates[choice - 1], f"preprocess.face={choice}", {}
    if choice == "largest" or speech is None:
        return largest, "the largest face (preprocess.face=largest)" if choice == "largest" else \
            "the largest face", {}
    samples, rate = speech()
    scores = speaking_scores(video, info, candidates, samples, rate, progress=progress)
    stats = {"speaking_scores": [round(s, 3) for s in scores]}
    order = np.argsort(scores)[::-1]
    best, second = scores[order[0]], scores[order[1]] if len(scores) > 1 else -1.0
    listed = ", ".join(f"face {c.number} {s:+.2f}" for c, s in zip(candidates, scores, strict=True))
    if best >= SPEAKING_MIN and best - second >= SPEAKING_MARGIN:
        return candidates[order[0]], f"its mouth moves with the speech (jawOpen-loudness correlation {listed})", stats
    return largest, (f"the largest face: no face's mouth clearly follows the speech (jawOpen-loudness correlation "
                     f"{listed})"), stats


def find_crop(video: Path, info: MediaInfo, face_fraction: float, every_s: float, face: str | int = "auto",
              speech: Callable[[], tuple[np.ndarray, int]] | None = None, progress: bool = True
              ) -> tuple[Crop, dict]:
    """Search the clip for the face and choose the crop. Raises MediaError when no face is found anywhere.

    With several faces in much of the clip, `face` says which is the subject (see choose_face; `speech()` returns
    the audio and its sample rate for "auto"); the choice, its reason and how to choose another are logged."""
    if not (face in ("auto", "largest") or (isinstance(face, int) and not isinstance(face, bool) and face >= 1)):
        raise UserInputError(f"preprocess.face={face!r}: give auto (the face whose mouth moves with the speech), "
                             f"largest, or a face number (1 = the leftmost face)")
    from synctalk.progress import Progress

    expected = int(info.duration_s / every_s) + 1
    with Progress("frames: face search", total=expected, unit="frame", enabled=progress, leave=False) as bar:
        samples = detect_faces(video, info, every_s, on_sample=lambda: bar.update(1))
    candidates = face_candidates(samples)
    stats: dict = {}
    if len(candidates) > 1 or isinstance(face, int):
        if not candidates:
            candidates = face_candidates(samples, min_present=0.0)
        chosen, why, stats = choose_face(video, info, candidates, face, speech, progress) if candidates else \
            (None, "", {})
        if chosen is not None:
            faces = [b for b in chosen.boxes if b is not None]
            others = [c.describe() for c in candidates if c is not chosen]
            if others:
                log.warning("%d faces in the clip; the subject is %s: %s. The other(s): %s. To choose another, "
                            "set preprocess.face=N (N = 1 for the leftmost face, 2 for the next...), or largest, and "
                            "rerun with --overwrite", len(candidates), chosen.describe(), why, "; ".join(others))
            stats.update(faces=len(candidates), face=chosen.number, face_reason=why)
        else:
            faces = []
    else:
        faces = [f for f in main_subject(samples) if f is not None]
    if not faces:
        raise MediaError(f"{video}: no face found in any of the {len(samples)} frames sampled every {every_s:g} s. "
                         f"synctalk needs a video of one person facing the camera with the face visible "
                         f"(at least ~40 pixels high).")
    crop = choose_crop(faces, info, face_fraction)
    stats = {"sampled_frames": len(samples), "frames_with_face": len(faces),
             "multiple_faces": sum(len(s) > 1 for s in samples),
             "face_height_px": float(np.median([f.height for f in faces])), **stats}
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


def crop_picture(video: Path, info: MediaInfo, crop: Crop, path: Path, progress: bool = False) -> None:
    """QA: a source frame from the middle of the clip with the crop box drawn."""
    import cv2

    from synctalk.io.images import write_image
    from synctalk.progress import track

    middle = info.duration_s / 2
    frame = None
    frames = track(read_frames(video, fps=1.0, info=info), "frames: QA picture", total=int(middle) + 1, unit="s",
                   enabled=progress, leave=False)
    for i, f in enumerate(frames):
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
