"""The built-in sample: a short talking clip made at run time from redistributable parts only.

Picture: scikit-image's astronaut portrait (Eileen Collins, NASA, public domain), which ships inside the
scikit-image wheel. Face landmarks come from MediaPipe's legacy FaceMesh model, which ships inside the
mediapipe 0.10.14 wheel, so nothing is downloaded.

Sound: speech-like syllables from a formant synthesiser (glottal pulse train through vowel resonances, with
consonant noise bursts and pauses between phrases).

Motion: the same syllable envelope opens the mouth (the jaw and lower lip move down, the gap shows a dark
mouth interior and upper teeth) so that lips and audio are in sync by construction; the head sways (roll,
shift, small nods) through a soft head mask. The ground truth (mouth openness and head motion per frame) is
returned for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 16000

# Vowel formants (Hz) of an adult speaker, and how wide each vowel opens the mouth (0..1).
VOWELS = {
    "a": ((730, 1090, 2440), 1.0),
    "e": ((530, 1840, 2480), 0.6),
    "i": ((270, 2290, 3010), 0.3),
    "o": ((570, 840, 2410), 0.75),
    "u": ((300, 870, 2240), 0.4),
}

# MediaPipe face-mesh indices (478-point topology).
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
FACE_TOP, CHIN, FACE_LEFT, FACE_RIGHT = 10, 152, 234, 454


@dataclass
class SampleClip:
    """A generated clip and its ground truth."""

    frames: list[np.ndarray]          # [T] of [S, S, 3] uint8 RGB
    audio: np.ndarray                 # [fps-aligned samples] float32 mono at SAMPLE_RATE_HZ
    fps: float
    mouth_open: np.ndarray            # [T] float32 in [0, 1], how open the mouth is in each frame
    head_roll_deg: np.ndarray         # [T] float32
    head_shift_px: np.ndarray         # [T, 2] float32 (x, y), in output pixels
    sample_rate_hz: int = SAMPLE_RATE_HZ
    notes: dict = field(default_factory=dict)


def synthesize_speech(seconds: float, rng: np.random.Generator,
                      sample_rate_hz: int = SAMPLE_RATE_HZ) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio and its mouth-opening curve, both `[seconds * sample_rate_hz]` float32.

    Phrases of 3-7 syllables (consonant burst + vowel, 110-260 ms each) separated by 0.2-0.45 s pauses.
    The opening curve is the vowel's openness times its amplitude envelope, 0 in pauses.
    """
    from scipy.signal import lfilter

    n = int(round(seconds * sample_rate_hz))
    audio = np.zeros(n, np.float64)
    opening = np.zeros(n, np.float64)
    t = int(0.25 * sample_rate_hz)  # start with a short silence
    f0_base = 120.0
    while t < n - int(0.3 * sample_rate_hz):
        for _ in range(rng.integers(3, 8)):
            length = int(rng.uniform(0.11, 0.26) * sample_rate_hz)
            if t + length >= n:
                break
            formants, openness = VOWELS["aeiou"[rng.integers(0, 5)]]
            k = np.arange(length)
            # Glottal source: pulse train with slowly drifting pitch (intonation), rich in harmonics.
            f0 = f0_base * (1 + 0.08 * np.sin(2 * np.pi * (t + k) / sample_rate_hz * 0.7)) * rng.uniform(0.95, 1.05)
            phase = np.cumsum(f0 / sample_rate_hz)
            source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
            voiced = np.zeros(length)
            for f, bw in zip(formants, (80, 100, 140), strict=True):
                r = np.exp(-np.pi * bw / sample_rate_hz)
                theta = 2 * np.pi * f / sample_rate_hz
                voiced += lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
            # Envelope: raised-cosine attack and release; consonant: a short noise burst at the onset.
            env = np.ones(length)
            attack, release = int(0.03 * sample_rate_hz), int(0.06 * sample_rate_hz)
            env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
            env[-release:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
            burst = np.zeros(length)
            b = int(0.025 * sample_rate_hz)
            burst[:b] = rng.normal(0, 0.25, b) * np.hanning(b)
            segment = voiced / (np.abs(voiced).max() + 1e-9) * env * 0.6 + burst
            audio[t:t + length] += segment
            opening[t:t + length] = np.maximum(opening[t:t + length], openness * env)
            t += length
        t += int(rng.uniform(0.2, 0.45) * sample_rate_hz)
    audio = 0.8 * audio / (np.abs(audio).max() + 1e-9)
    return audio.astype(np.float32), opening.astype(np.float32)


def portrait_landmarks(image: np.ndarray) -> np.ndarray:
    """478 face-mesh points `[478, 2]` (pixels) of a still portrait, with MediaPipe's in-wheel FaceMesh."""
    from synctalk.runtime import import_mediapipe, native_stderr_captured

    mp = import_mediapipe()
    with native_stderr_captured(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                                   max_num_faces=1) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        raise RuntimeError("the built-in portrait has no detectable face (mediapipe install broken?)")
    h, w = image.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark], np.float32)


def head_and_shoulders_crop(points: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) framing the face like common 512x512 talking-head datasets:
    face height about 40% of the side, forehead about a third of a face height below the top."""
    face_h = points[CHIN, 1] - points[FACE_TOP, 1]
    side = int(round(face_h / 0.4))
    side = min(side, *image_size)
    cx = float(points[[FACE_LEFT, FACE_RIGHT], 0].mean())
    y0 = int(round(points[FACE_TOP, 1] - 0.35 * face_h))
    x0 = int(round(cx - side / 2))
    x0 = int(np.clip(x0, 0, image_size[1] - side))
    y0 = int(np.clip(y0, 0, image_size[0] - side))
    return x0, y0, side


def _lip_line_and_span(points: np.ndarray, width: int) -> tuple[np.ndarray, float, float]:
    """Per-column y of the closed-mouth line `[width]` (between inner lips) and the mouth's x span."""
    upper = points[list(UPPER_INNER_LIP)]
    lower = points[list(LOWER_INNER_LIP)]
    mid = (upper + lower) / 2
    order = np.argsort(mid[:, 0])
    xs = np.arange(width, dtype=np.float32)
    line = np.interp(xs, mid[order, 0], mid[order, 1]).astype(np.float32)
    return line, float(mid[:, 0].min()), float(mid[:, 0].max())


def open_mouth(image: np.ndarray, points: np.ndarray, openness: float) -> np.ndarray:
    """Open the mouth of a closed-mouth portrait by `openness` (0..1).

    The jaw drops by `D(x)` (up to 40% of the mouth width, smooth across the jaw); between the mouth corners
    the lips part by `gap(x) <= D(x)` (lens-shaped) and the gap shows a dark interior with upper teeth. Below
    the gap the displacement grows from `gap` to `D` and fades out under the chin, so the mapping stays
    monotone (no folds) and continuous.
    """
    import cv2

    h, w = image.shape[:2]
    if openness <= 1e-3:
        return image.copy()
    line, x_left, x_right = _lip_line_and_span(points, w)
    mouth_w = x_right - x_left
    face_h = points[CHIN, 1] - points[FACE_TOP, 1]
    jaw_w = 0.6 * (points[FACE_RIGHT, 0] - points[FACE_LEFT, 0])
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    across = np.clip(1 - ((xs - (x_left + x_right) / 2) / jaw_w) ** 2, 0, 1) ** 1.5
    drop = 0.4 * mouth_w * openness * across                                       # D(x)   [W]
    u = np.clip((xs - x_left) / max(mouth_w, 1.0), 0, 1)
    gap = drop * np.clip(np.sin(np.pi * u), 0, 1) ** 0.8                                         # gap(x) [W]
    depth = ys - line[None, :]                                                     # [H, W] px below the line
    ramp = 1.5 * np.maximum(drop - gap, 1.0)
    disp = gap + (drop - gap) * np.clip((depth - gap) / ramp, 0, 1)
    disp *= np.clip(1 - (ys - points[CHIN, 1]) / (0.35 * face_h), 0, 1)            # fade under the chin
    map_y = np.where(depth > 0, np.maximum(ys - disp, line[None, :]), ys).astype(np.float32)
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # Interior: anti-aliased band 0 <= depth < gap, dark red getting darker downwards, upper teeth on top.
    inside = np.clip(depth + 0.5, 0, 1) * np.clip(gap[None, :] - depth, 0, 1) * np.clip(gap[None, :], 0, 1)
    shade = np.clip(depth / np.maximum(gap[None, :], 1), 0, 1)
    interior = np.stack([70 - 40 * shade, 22 - 12 * shade, 28 - 14 * shade], -1)
    is_teeth = np.clip(0.28 * gap[None, :] - depth, 0, 1)[..., None]
    interior = is_teeth * np.array([225, 220, 205], np.float32) + (1 - is_teeth) * interior
    out = warped.astype(np.float32) * (1 - inside[..., None]) + interior * inside[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def move_head(image: np.ndarray, points: np.ndarray, roll_deg: float, shift_xy: tuple[float, float]) -> np.ndarray:
    """Rotate the head by `roll_deg` about the neck and shift it, through a soft head mask (background and
    shoulders stay put)."""
    import cv2

    h, w = image.shape[:2]
    face_h = points[CHIN, 1] - points[FACE_TOP, 1]
    face_w = points[FACE_RIGHT, 0] - points[FACE_LEFT, 0]
    centre = np.array([points[[FACE_LEFT, FACE_RIGHT], 0].mean(), (points[FACE_TOP, 1] + points[CHIN, 1]) / 2
                       - 0.1 * face_h])
    pivot = np.array([centre[0], points[CHIN, 1] + 0.35 * face_h])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # Soft elliptical head mask (hair included), fading through the neck.
    ell = ((xs - centre[0]) / (0.85 * face_w)) ** 2 + ((ys - centre[1]) / (0.8 * face_h)) ** 2
    mask = np.clip(1.6 - ell, 0, 1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.12 * face_h)
    # Inverse rigid motion: where each output pixel comes from.
    a = np.deg2rad(roll_deg)
    px, py = xs - pivot[0] - shift_xy[0], ys - pivot[1] - shift_xy[1]
    src_x = np.cos(a) * px + np.sin(a) * py + pivot[0]
    src_y = -np.sin(a) * px + np.cos(a) * py + pivot[1]
    map_x = (xs + mask * (src_x - xs)).astype(np.float32)
    map_y = (ys + mask * (src_y - ys)).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_sample_clip(seconds: float = 6.0, size: int = 256, fps: float = 25.0, seed: int = 0,
                     progress: bool = False) -> SampleClip:
    """Generate the built-in talking clip (frames, audio, ground truth). Deterministic for a given seed."""
    import cv2
    import skimage.data
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    portrait = skimage.data.astronaut()                    # [512, 512, 3] uint8, public domain
    points_full = portrait_landmarks(portrait)
    x0, y0, side = head_and_shoulders_crop(points_full, portrait.shape[:2])
    crop = cv2.resize(portrait[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    points = (points_full - np.array([x0, y0], np.float32)) * (size / side)

    n_frames = int(round(seconds * fps))
    audio, opening = synthesize_speech(n_frames / fps, rng)
    # Mouth openness of a frame: mean opening over the frame's exposure, slightly smoothed like a real jaw.
    per_frame = opening[: n_frames * (len(opening) // n_frames)].reshape(n_frames, -1).mean(axis=1)
    mouth_open = np.convolve(np.pad(per_frame, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    mouth_open = np.clip(mouth_open, 0, 1).astype(np.float32)

    t = np.arange(n_frames) / fps
    phases = rng.uniform(0, 2 * np.pi, 4)
    roll = 3.0 * np.sin(2 * np.pi * 0.21 * t + phases[0]) + 1.0 * np.sin(2 * np.pi * 0.53 * t + phases[1])
    shift = np.stack([0.02 * size * np.sin(2 * np.pi * 0.17 * t + phases[2]),
                      0.012 * size * np.sin(2 * np.pi * 0.31 * t + phases[3]) + 0.01 * size * mouth_open], -1)

    frames = [move_head(open_mouth(crop, points, float(mouth_open[i])), points, float(roll[i]),
                        (float(shift[i, 0]), float(shift[i, 1])))
              for i in tqdm(range(n_frames), desc="sample frames", unit="frame", disable=None if progress else True,
                            leave=False)]
    return SampleClip(frames=frames, audio=audio, fps=fps, mouth_open=mouth_open,
                      head_roll_deg=roll.astype(np.float32), head_shift_px=shift.astype(np.float32),
                      notes={"portrait": "skimage.data.astronaut (public domain)", "crop_xys": [x0, y0, side]})


def write_sample_clip(clip: SampleClip, video_path: str | Path) -> Path:
    """Write the clip as H.264 mp4 with its audio track (AAC)."""
    import tempfile

    from synctalk.io.media import write_video, write_wav

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        write_wav(wav, clip.audio, clip.sample_rate_hz)
        return write_video(video_path, clip.frames, clip.fps, audio_path=wav)
