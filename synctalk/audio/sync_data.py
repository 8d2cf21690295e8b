"""Training and scoring data for the sync model: per-clip lower-face crops + mel, and a batch sampler.

A `SyncClip` holds one talking clip at its frame rate: grey lower-face crops with a margin (for shift
augmentation), the normalised mel spectrogram of its speech (sample 0 = frame 0), which frames have a face, and
which frame indices may be used as window centres (e.g. only the training part of a clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from synctalk.audio import mel as melspec
from synctalk.audio.lips import CROP_H, CROP_W, lower_face
from synctalk.audio.sync_model import VIDEO_FRAMES
from synctalk.errors import DatasetError

MARGIN = 4                   # crops are stored with 2·MARGIN px extra height and 4·MARGIN extra width
HALF = VIDEO_FRAMES // 2     # a window of 5 frames is centred: t-2 .. t+2


@dataclass
class SyncClip:
    name: str
    crops: np.ndarray        # [N, 48 + 2M, 96 + 4M] uint8
    mel: np.ndarray          # [T, 80] float32, mel frame j at j/80 s
    fps: float
    face: np.ndarray         # [N] bool: the frame has a (detected or interpolated) face
    centres: np.ndarray      # [K] int64: frames allowed as window centres
    samples: np.ndarray | None = None   # [S] float32 16 kHz speech (kept for judges that need raw audio)
    faces: np.ndarray | None = None     # [N, 224, 224, 3] uint8 RGB face crops (official SyncNet only)
    mfcc: np.ndarray | None = None      # cache of the official SyncNet's MFCCs

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, start: int, stop: int, name: str | None = None) -> SyncClip:
        """Only windows lying entirely inside frames [start, stop) (the audio window too, within a frame)."""
        return replace(self, name=name or f"{self.name}[{start}:{stop}]",
                       centres=valid_centres(self.face, start, stop))

    def delayed(self, frames: int) -> SyncClip:
        """The same clip with its audio delayed by `frames` video frames (silence inserted at the start)."""
        shift = int(round(frames * melspec.MEL_FPS / self.fps))
        pad = np.full((max(shift, 0), self.mel.shape[1]), melspec.SILENCE, np.float32)
        mel = np.concatenate([pad, self.mel])[:len(self.mel)] if shift >= 0 else self.mel[-shift:]
        samples = None
        if self.samples is not None:
            n = int(round(frames * melspec.SAMPLE_RATE_HZ / self.fps))
            samples = (np.concatenate([np.zeros(max(n, 0), np.float32), self.samples])[:len(self.samples)]
                       if n >= 0 else self.samples[-n:])
        return replace(self, name=f"{self.name}+{frames}f", mel=mel, samples=samples, mfcc=None)


def valid_centres(face: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames t in [start+2, stop-2) whose 5-frame window t-2..t+2 all have a face."""
    stop = len(face) if stop is None else stop
    ok = np.convolve(face.astype(np.int32), np.ones(VIDEO_FRAMES, np.int32), "same") == VIDEO_FRAMES
    t = np.arange(len(face))
    return t[ok & (t >= start + HALF) & (t < stop - HALF)].astype(np.int64)


def clip_from_subject(root: str | Path, progress: bool = False) -> SyncClip:
    """Build a SyncClip from a subject directory with the frames, audio and landmarks steps done."""
    from synctalk.data import SubjectDataset
    from synctalk.data.contract import FACE_MISSING
    from synctalk.progress import track

    ds = SubjectDataset(root, require=("frames", "audio", "landmarks"), cache_frames=0)
    landmarks = np.asarray(ds.landmarks)
    face = np.asarray(ds.face_flags) != FACE_MISSING
    crops = np.empty((len(ds), CROP_H + 2 * MARGIN, CROP_W + 4 * MARGIN), np.uint8)
    for i in track(range(len(ds)), f"lip crops {Path(root).name}", unit="frame", leave=False, enabled=progress):
        crops[i] = lower_face(ds.image(i), landmarks[i], MARGIN)
    samples = melspec.to_mono_16k(ds.audio(), ds.sample_rate_hz)
    if not face.any():
        raise DatasetError(f"{root}: no frame has a face; cannot train or score lip sync on it")
    return SyncClip(Path(root).name, crops, melspec.melspectrogram(samples), ds.fps, face, valid_centres(face),
                    samples)


CLIP_CACHE_VERSION = 1


def clip_from_video(video: str | Path, audio: str | Path | None = None, fps: float = 25.0, max_side: int = 720,
                    progress: bool = False, cache: bool = True, faces: bool = False) -> SyncClip:
    """Build a SyncClip straight from a talking video (+ optional separate audio): frames at `fps`, shrunk so the
    longer side is at most `max_side`, tracked with the Face Landmarker (gaps of up to 6 frames interpolated,
    landmarks smoothed over 5 frames as in preprocessing). Cached under `$SYNCTALK_HOME/cache/sync_clips` by
    file hash, so a corpus is tracked once. `faces=True` also keeps 224 px colour face crops (for the official
    SyncNet judge; not cached)."""
    from synctalk.assets import home_dir, sha256_of
    from synctalk.face.landmarks import fill_gaps, smooth_track, track_faces
    from synctalk.io.media import load_speech, probe, read_frames

    video = Path(video)
    info = probe(video)
    if not info.has_video:
        raise DatasetError(f"{video}: no video stream; sync training needs videos of people talking")
    key = f"{sha256_of(video)[:16]}-{sha256_of(Path(audio))[:8] if audio else 'own'}-{fps:g}-{max_side}"
    cache_path = home_dir() / "cache" / "sync_clips" / f"{video.stem}-{key}-v{CLIP_CACHE_VERSION}.npz"
    samples = load_speech(video, audio)
    if cache and cache_path.is_file() and not faces:
        data = np.load(cache_path)
        return SyncClip(video.stem, data["crops"], data["mel"], float(data["fps"]), data["face"],
                        valid_centres(data["face"]), samples)
    scale = min(1.0, max_side / max(info.width, info.height))
    size = (int(round(info.width * scale / 2)) * 2, int(round(info.height * scale / 2)) * 2)
    n_frames = info.expected_frames(fps)
    track = track_faces(read_frames(video, fps, info, size=size), n_frames, fps, progress=progress)
    if not (track.flags != 0).any():
        raise DatasetError(f"{video}: the face landmarker found no face; it cannot be used for lip sync")
    track = smooth_track(fill_gaps(track, 6), 5)
    crops = np.empty((n_frames, CROP_H + 2 * MARGIN, CROP_W + 4 * MARGIN), np.uint8)
    face_crops = np.empty((n_frames, 224, 224, 3), np.uint8) if faces else None
    count = 0
    for i, frame in enumerate(read_frames(video, fps, info, size=size, max_frames=n_frames)):
        crops[i] = lower_face(frame, track.landmarks[i], MARGIN)
        if face_crops is not None:
            face_crops[i] = face_crop(frame, track.landmarks[i])
        count = i + 1
    face = track.flags[:count] != 0
    clip = SyncClip(video.stem, crops[:count], melspec.melspectrogram(samples), fps, face, valid_centres(face),
                    samples, None if face_crops is None else face_crops[:count])
    if cache:
        from synctalk.io.atomic import atomic_path

        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, crops=clip.crops, mel=clip.mel, fps=fps, face=face)
    return clip


def face_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 224, scale: float = 1.4) -> np.ndarray:
    """Square RGB crop `[size, size, 3]` around the landmarks' bounding box enlarged `scale` times."""
    import cv2

    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    centre, half = (lo + hi) / 2, scale * float((hi - lo).max()) / 2
    matrix = np.array([[size / (2 * half), 0, size / 2 - centre[0] * size / (2 * half)],
                       [0, size / (2 * half), size / 2 - centre[1] * size / (2 * half)]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def load_clips(paths: list[str | Path], fps: float = 25.0, progress: bool = False,
               before_validation: bool = False) -> list[SyncClip]:
    """Sync clips from a mix of subject directories, video files and folders of videos (searched recursively
    for .mp4/.mov/.mkv/.avi/.webm). A video with a same-named .wav/.flac beside it uses that as its audio.
    ``before_validation``: of a subject, only the frames before its first validation frame (splits.json), so the
    model can judge renders of the held-out frames it never saw."""
    videos: list[tuple[Path, Path | None]] = []
    subjects: list[Path] = []
    for entry in map(Path, paths):
        if not entry.exists():
            raise DatasetError(f"{entry}: not found (give subject directories, videos, or folders of videos)")
        if entry.is_dir() and (entry / "meta.json").is_file():
            subjects.append(entry)
        elif entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise DatasetError(f"{entry}: no subject (meta.json) and no videos ({', '.join(VIDEO_SUFFIXES)})")
            videos += [(v, _sidecar_audio(v)) for v in found]
        else:
            videos.append((entry, _sidecar_audio(entry)))
    clips = [clip_from_subject(s, progress) for s in subjects]
    if before_validation:
        for k, subject in enumerate(subjects):
            splits = subject / "splits.json"
            val = json.loads(splits.read_text()).get("val", []) if splits.is_file() else []
            if val:
                clips[k] = clips[k].subset(0, min(val), f"{clips[k].name}[before validation]")
    from synctalk.progress import track

    for video, audio in track(videos, "corpus", unit="video", enabled=progress and len(videos) > 1):
        clips.append(clip_from_video(video, audio, fps, progress=progress))
    return clips


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def _sidecar_audio(video: Path) -> Path | None:
    for suffix in (".wav", ".flac"):
        if video.with_suffix(suffix).is_file():
            return video.with_suffix(suffix)
    return None


def video_windows(clip: SyncClip, centres: np.ndarray, shifts: np.ndarray | None = None) -> torch.Tensor:
    """`[B, 5, 48, 96]` float crops in [0, 1] around `centres`; `shifts` `[B, 2]` (dy, dx) in [0, 2M]x[0, 4M]
    picks the crop inside the margin (default: centred)."""
    index = centres[:, None] + np.arange(-HALF, HALF + 1)[None, :]
    stack = clip.crops[index]  # [B, 5, H + 2M, W + 4M]
    if shifts is None:
        shifts = np.tile([MARGIN, 2 * MARGIN], (len(centres), 1))
    out = np.empty((len(centres), VIDEO_FRAMES, CROP_H, CROP_W), np.uint8)
    for b, (dy, dx) in enumerate(shifts):
        out[b] = stack[b, :, dy:dy + CROP_H, dx:dx + CROP_W]
    return torch.from_numpy(out).float().div_(255.0)


def audio_windows(clip: SyncClip, centres: np.ndarray, offsets: np.ndarray | int = 0) -> torch.Tensor:
    """`[B, 80, 16]` mel windows of frames `centres + offsets` (offsets in video frames, silence past the ends)."""
    starts = melspec.window_starts(centres + np.asarray(offsets), clip.fps)
    return torch.from_numpy(melspec.windows_at(clip.mel, starts))


class PairSampler:
    """Random training batches: aligned (video, audio) windows plus, per item, one audio window of the same clip
    shifted by `min_offset`..`max_offset` frames either way (the hard negative), with augmentation."""

    def __init__(self, clips: list[SyncClip], batch_size: int, min_offset: int = 5, max_offset: int = 15,
                 seed: int = 0, augment: bool = True):
        self.clips = [c for c in clips if len(c.centres)]
        if not self.clips:
            raise DatasetError("no usable training windows: every clip is shorter than 5 frames with a face")
        self.batch_size = batch_size
        self.min_offset, self.max_offset = min_offset, max_offset
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        weights = np.array([len(c.centres) for c in self.clips], np.float64)
        self.clip_p = weights / weights.sum()

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def batch(self) -> dict[str, torch.Tensor]:
        rng, n = self.rng, self.batch_size
        clip_ids = rng.choice(len(self.clips), n, p=self.clip_p)
        videos, audios, negatives, times, shifted_by = [], [], [], [], []
        for c in np.unique(clip_ids):
            clip = self.clips[c]
            k = int((clip_ids == c).sum())
            centres = rng.choice(clip.centres, k)
            shifts = (np.stack([rng.integers(0, 2 * MARGIN + 1, k), rng.integers(0, 4 * MARGIN + 1, k)], 1)
                      if self.augment else None)
            offsets = rng.integers(self.min_offset, self.max_offset + 1, k) * rng.choice([-1, 1], k)
            videos.append(video_windows(clip, centres, shifts))
            audios.append(audio_windows(clip, centres))
            negatives.append(audio_windows(clip, centres, offsets))
            times.append(np.stack([np.full(k, c), centres], 1))
            shifted_by.append(offsets)
        video = torch.cat(videos)
        if self.augment:  # brightness/contrast per item, and a mirror (lip motion is left-right symmetric)
            gain = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1))).float()
            bias = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 1, 1, 1))).float()
            video = ((video - 0.5) * gain + 0.5 + bias).clamp_(0, 1)
            flip = torch.from_numpy(rng.random(n) < 0.5)
            video[flip] = video[flip].flip(-1)
        return {"video": video, "audio": torch.cat(audios), "negative_audio": torch.cat(negatives),
                "clip_time": torch.from_numpy(np.concatenate(times)),
                "negative_offset": torch.from_numpy(np.concatenate(shifted_by))}
