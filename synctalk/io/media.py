"""Video and audio IO through the ffmpeg binary that ships with imageio-ffmpeg (no system ffmpeg needed).

Conventions:
- Frames are RGB `uint8` arrays `[H, W, 3]`, rotation metadata already applied (the picture as a player shows it).
- Audio is `float32` mono in [-1, 1] at `sample_rate_hz` (default 16 kHz).
- Frame `i` of a video read at `fps` shows time `video_start_s + i / fps`; `load_audio(..., start_s=...)` cuts
  the audio at the same origin so that sample 0 lines up with frame 0.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.errors import MediaError
from synctalk.io.atomic import atomic_path, temp_path_beside

DEFAULT_SAMPLE_RATE_HZ = 16000


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg (override with the IMAGEIO_FFMPEG_EXE environment variable)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` learns about a media file. Sizes are after rotation (as displayed)."""

    path: Path
    duration_s: float
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    rotation_deg: int = 0
    video_start_s: float = 0.0
    video_codec: str = ""
    has_audio: bool = False
    audio_sample_rate_hz: int = 0
    audio_channels: int = 0

    def expected_frames(self, fps: float, n_source_frames: int | None = None) -> int:
        """Frames that `read_frames(path, fps)` yields: the source count rescaled to `fps`, rounded."""
        if n_source_frames is not None and self.fps > 0:
            return int(round(n_source_frames * fps / self.fps))
        return int(round(self.duration_s * fps))


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (.*)")
_SIZE = re.compile(r"(?<![\dx])(\d{2,5})x(\d{2,5})(?![\dx])")
_FPS = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_START = re.compile(r"start (-?[\d.]+)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_RATE = re.compile(r"(\d+) Hz, ([^,]+)")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, expected a video or audio file")


def probe(path: str | Path) -> MediaInfo:
    """Read container/stream information. Raises MediaError for missing, unreadable or non-media files."""
    path = Path(path)
    _check_exists(path)
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          errors="replace")
    text = proc.stderr
    if "Invalid data found" in text or "Error opening input" in text or "moov atom not found" in text:
        raise MediaError(f"{path}: cannot be read as video or audio (corrupt, truncated, or not a media file). "
                         f"Re-export it (e.g. as H.264 mp4) and try again. ffmpeg said: {_last_line(text)}")
    duration = 0.0
    if m := _DURATION.search(text):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    info: dict = {"path": path, "duration_s": duration, "has_video": False}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _STREAM.search(line)
        if not m:
            continue
        kind, desc = m[1], m[2]
        if kind == "Video" and not info["has_video"] and "attached pic" not in desc:
            size = _SIZE.search(desc)
            if not size:
                continue
            fps_match = _FPS.search(desc)
            fps = float(fps_match[1]) * (1000 if fps_match and fps_match[2] else 1) if fps_match else 0.0
            start = _START.search(desc)
            rotation = 0
            for follow in lines[i + 1:i + 8]:  # side data of this stream, before the next stream
                if _STREAM.search(follow):
                    break
                if r := _ROTATION.search(follow):
                    rotation = int(round(float(r[1]))) % 360
            width, height = int(size[1]), int(size[2])
            if rotation in (90, 270):
                width, height = height, width
            info.update(has_video=True, width=width, height=height, fps=fps, rotation_deg=rotation,
                        video_start_s=float(start[1]) if start else 0.0, video_codec=desc.split()[0].rstrip(","))
        elif kind == "Audio" and not info.get("has_audio"):
            rate = _RATE.search(desc)
            channels = _layout_channels(rate[2]) if rate else 0
            info.update(has_audio=True, audio_sample_rate_hz=int(rate[1]) if rate else 0, audio_channels=channels)
    if not info["has_video"] and not info.get("has_audio"):
        raise MediaError(f"{path}: no video or audio stream found (is it a media file?)")
    return MediaInfo(**info)


_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7,
            "7.1": 8}


def _layout_channels(layout: str) -> int:
    """Channel count of an ffmpeg layout name: 'stereo' → 2, '5.1(side)' → 6, '3 channels' → 3."""
    layout = layout.strip()
    if m := re.match(r"(\d+) channels", layout):
        return int(m[1])
    return _LAYOUTS.get(layout.split("(")[0], 2)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(nothing)"


def read_frames(path: str | Path, fps: float | None = None, info: MediaInfo | None = None,
                crop: tuple[int, int, int, int] | None = None, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames `[H, W, 3] uint8`, resampled to `fps` (None keeps the source rate).

    Args:
        crop: `(x0, y0, width, height)` in displayed source pixels, applied before resizing.
        size: `(width, height)` of the output frames (area filter when shrinking, bicubic when enlarging).
        max_frames: stop after this many frames.

    Variable-frame-rate input comes out at a constant rate (ffmpeg's fps filter picks the nearest frame).
    """
    info = info or probe(path)
    if not info.has_video:
        raise MediaError(f"{path}: has no video stream (audio only?); give a video file")
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0"]
    filters = [f"fps={fps:g}"] if fps is not None else []
    out_w, out_h = info.width, info.height
    if crop is not None:
        x0, y0, out_w, out_h = crop
        filters.append(f"crop={out_w}:{out_h}:{x0}:{y0}")
    if size is not None:
        flags = "area" if size[0] * size[1] <= out_w * out_h else "bicubic"
        filters.append(f"scale={size[0]}:{size[1]}:flags={flags}")
        out_w, out_h = size
    if filters:
        cmd += ["-vf", ",".join(filters)]
    if max_frames is not None:
        cmd += ["-frames:v", str(max_frames)]
    # passthrough: never duplicate frames to fill a stream that starts late (e.g. at 0.08 s); the start
    # offset is reported by probe() as video_start_s and the audio is cut to match instead.
    cmd += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = out_w * out_h * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            count += 1
            yield np.frombuffer(buf, np.uint8).reshape(out_h, out_w, 3)
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise MediaError(f"{path}: decoding failed ({_last_line(err)}); the file may be corrupt or truncated")
        # ffmpeg exits 0 on a truncated file; it says "partial file", and far fewer frames arrive than the
        # container's duration promises.
        expected = info.duration_s * (fps or info.fps)
        if max_frames is not None:
            expected = min(expected, max_frames)
        if "partial file" in err or (expected > 0 and count < 0.9 * expected - 2):
            raise MediaError(f"{path}: truncated or corrupt: decoded {count} frames, the container promises "
                             f"about {expected:.0f}. Re-export or re-download the file.")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def load_audio(path: str | Path, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ, start_s: float = 0.0,
               duration_s: float | None = None) -> np.ndarray:
    """Decode the first audio track of any audio or video file to mono float32 at `sample_rate_hz`.

    Mono is the mean of the channels; `start_s`/`duration_s` cut the decoded signal (seconds).
    Raises MediaError when the file has no audio track.
    """
    path = Path(path)
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: has no audio track. Give the speech separately with --audio FILE "
                         f"(wav, flac, mp3, m4a...).")
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.6f}"]
    cmd += ["-i", str(path), "-map", "0:a:0", "-vn"]
    if duration_s is not None:
        cmd += ["-t", f"{duration_s:.6f}"]
    # Keep every channel and average here: ffmpeg's own downmix (-ac 1) adds channels at -3 dB each, which
    # makes a centred stereo voice 1.41x louder than either channel and can clip.
    channels = max(info.audio_channels, 1)
    cmd += ["-ac", str(channels), "-ar", str(sample_rate_hz), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise MediaError(f"{path}: audio decoding failed ({_last_line(proc.stderr.decode(errors='replace'))})")
    samples = np.frombuffer(proc.stdout, np.float32)
    return samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM wav, atomically."""
    import soundfile

    samples = np.asarray(samples, np.float32)
    if samples.ndim != 1:
        raise ValueError(f"write_wav expects mono samples [N], got shape {samples.shape}")
    with atomic_path(path) as tmp:
        soundfile.write(tmp, np.clip(samples, -1.0, 1.0), sample_rate_hz, subtype="PCM_16", format="WAV")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav/flac file as float32 (mono files → [N], multi-channel → [N, C]) and its sample rate."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32")
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise MediaError(f"{path}: cannot read audio ({exc})") from None
    return samples, int(rate)


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 (yuv420p, plays everywhere), optionally muxing an audio file.

    The file appears at `path` only when `close()` succeeds (written to a temporary name first).

    >>> with VideoWriter("out.mp4", fps=25, audio_path="speech.wav") as writer:   # doctest: +SKIP
    ...     for frame in frames:
    ...         writer.write(frame)
    """

    def __init__(self, path: str | Path, fps: float, audio_path: str | Path | None = None, crf: int = 18,
                 preset: str = "medium"):
        self.path = Path(path)
        self.fps = fps
        self.audio_path = Path(audio_path) if audio_path else None
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _start(self, height: int, width: int) -> None:
        self._tmp = temp_path_beside(self.path)
        self._size = (height, width)
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{self.fps:g}", "-i", "-"]
        if self.audio_path is not None:
            cmd += ["-i", str(self.audio_path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
        # yuv420p needs even sides: pad by one pixel where needed (cropped back by nothing, the pad is black).
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", self.preset,
                "-crf", str(self.crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be [H, W, 3] uint8 RGB, got {frame.shape} {frame.dtype}")
        if self._proc is None:
            self._start(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames_written} has size {frame.shape[:2]}, the video is {self._size}")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:  # ffmpeg stopped (a full disk, a killed process): say why, not "broken pipe"
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            self._abort()
            raise self._failure(err) from None
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.write(frame)

    def close(self) -> Path:
        if self._proc is None:
            raise MediaError(f"{self.path}: no frames were written")
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        code = self._proc.wait()
        self._proc = None
        assert self._tmp is not None
        if code != 0:
            self._tmp.unlink(missing_ok=True)
            raise self._failure(err)
        os.replace(self._tmp, self.path)
        return self.path

    def _failure(self, err: str) -> Exception:
        from synctalk.io.atomic import DISK_FULL_TEXT, disk_full_error

        if DISK_FULL_TEXT in err:
            return disk_full_error(self.path, what=f"the video ({self.frames_written} frames encoded)")
        return MediaError(f"{self.path}: ffmpeg failed to encode ({_last_line(err)})")

    def _abort(self) -> None:
        """Stop ffmpeg and delete the partial file; an existing `path` is left untouched."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                audio_path: str | Path | None = None) -> Path:
    """Write frames (and an optional audio file) to an H.264 mp4. Returns the path."""
    with VideoWriter(path, fps, audio_path) as writer:
        writer.write_all(frames)
    return Path(path)


def load_speech(video_path: str | Path, audio_path: str | Path | None = None,
                sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ) -> np.ndarray:
    """The speech that goes with a video, aligned so that sample 0 is the time of the video's first frame.

    From `audio_path` when given (a separate recording that starts with the video), else from the video's own
    audio track cut at the video stream's start time. A video without audio and no `audio_path` is an error
    that says to pass --audio.
    """
    if audio_path is not None:
        return load_audio(audio_path, sample_rate_hz)
    info = probe(video_path)
    if not info.has_audio:
        raise MediaError(f"{video_path}: has no audio track and no --audio FILE was given. Pass the speech that "
                         f"belongs to this video with --audio (wav, flac, mp3, m4a...).")
    return load_audio(video_path, sample_rate_hz, start_s=info.video_start_s)
