"""`synctalk stream`: render while the audio arrives, the base for real-time avatars.

Audio comes in chunks (a file read at real-time pace, or raw 16-bit mono PCM on stdin). Frame ``i`` can be drawn
once the audio its features need has arrived: its own 0.2 s mel window (to ``(i + 0.5) / fps + 0.1`` s plus half
an FFT) and the audio windows of the frames up to ``i + window // 2 - 1`` that the audio net's temporal attention
looks at. That lookahead is the algorithmic latency (about 0.27 s at 25 fps for the ave and mel backends); the
measured latency per chunk adds the time to compute features and render.

Features are computed on audio segments that start a fixed context before the first new frame, at a sample that
is both a frame start and a mel hop multiple, so for the ave and mel backends a streamed frame equals the offline
render of the same audio. (HuBERT/wav2vec2 see 2 s of left context only, so they differ slightly.) The phones
backend decodes the stream incrementally (synctalk.audio.phones.PhoneTracker: 1 s blocks with 0.5 s of context,
so up to 1.6 s of lookahead) and equals the offline render too; its tracker keeps the stream's audio (64 kB/s).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk.audio.features import backend_parts
from synctalk.errors import SyncTalkError, UserInputError

log = logging.getLogger("synctalk.render")

SAMPLE_RATE_HZ = 16000
CONTEXT_S = 0.5                 # audio before the first new frame's window (ave/mel: only the FFT edge matters)
TRANSFORMERS_CONTEXT_S = 2.0
MEL_WINDOW_S = 0.1 + 400 / SAMPLE_RATE_HZ   # half the 0.2 s mel window + half an FFT


@dataclass
class StreamReport:
    n_frames: int
    audio_seconds: float
    wall_seconds: float
    latencies_s: list[float] = field(default_factory=list)   # per chunk that completed frames
    lookahead_s: float = 0.0

    @property
    def sustained_fps(self) -> float:
        return self.n_frames / max(self.wall_seconds, 1e-9)

    def summary(self) -> str:
        lat = np.asarray(self.latencies_s) if self.latencies_s else np.zeros(1)
        return (f"{self.n_frames} frames for {self.audio_seconds:.2f} s of audio in {self.wall_seconds:.2f} s: "
                f"sustained {self.sustained_fps:.2f} frames/s; latency per chunk mean {lat.mean():.3f} s, "
                f"p95 {np.percentile(lat, 95):.3f} s, max {lat.max():.3f} s (algorithmic lookahead "
                f"{self.lookahead_s:.3f} s)")


def file_chunks(path: str | Path, chunk_s: float = 0.2, realtime: bool = True) -> Iterator[np.ndarray]:
    """16 kHz mono chunks of an audio file, each released when it would have finished arriving live."""
    from synctalk.inference.video import load_driving_audio

    samples, _, _ = load_driving_audio(path, allow_silent=True)
    step = max(1, int(round(chunk_s * SAMPLE_RATE_HZ)))
    start = time.perf_counter()
    for first in range(0, len(samples), step):
        chunk = samples[first:first + step]
        if realtime:
            time.sleep(max(0.0, start + (first + len(chunk)) / SAMPLE_RATE_HZ - time.perf_counter()))
        yield chunk


def pcm_chunks(stream, rate: int = SAMPLE_RATE_HZ, chunk_s: float = 0.2) -> Iterator[np.ndarray]:
    """16 kHz float chunks of raw signed 16-bit little-endian mono PCM at ``rate`` read from a binary stream."""
    import soxr

    resampler = soxr.ResampleStream(rate, SAMPLE_RATE_HZ, 1, dtype="float32") if rate != SAMPLE_RATE_HZ else None
    block = max(2, int(round(chunk_s * rate)) * 2)
    pending = b""
    while True:
        data = stream.read(block)
        last = not data
        pending += data or b""
        usable = len(pending) - len(pending) % 2
        chunk = np.frombuffer(pending[:usable], "<i2").astype(np.float32) / 32768.0
        pending = pending[usable:]
        if resampler is not None:
            chunk = resampler.resample_chunk(chunk, last=last)
        if chunk.size:
            yield chunk
        if last:
            return


def mel_aligned_frames(fps: float) -> int:
    """Smallest frame count m whose duration is a whole number of mel hops (200 samples), so segments starting at
    multiples of m frames see the same mel frames as the whole clip (m = 5 at 25 fps, 3 at 30 fps; 1 when none)."""
    for m in range(1, 201):
        hops = m * SAMPLE_RATE_HZ / fps / 200
        if abs(hops - round(hops)) < 1e-6:
            return m
    return 1


class StreamRenderer:
    """Incremental features → codes → frames for one audio stream (see the module docstring)."""

    def __init__(self, avatar, options, horizon_s: float = 3600.0):
        from synctalk.inference.drive import make_drive

        self.avatar, self.options = avatar, options
        self.fps = avatar.fps
        parts = backend_parts(avatar.feature_info.get("backend", "ave"))
        self.context_s = TRANSFORMERS_CONTEXT_S if {"hubert", "wav2vec2"} & set(parts) else CONTEXT_S
        self.parts = parts                              # in feature order; phones from the tracker, others windowed
        self.phones = None
        if "phones" in parts:
            from synctalk.audio import phones

            self.phones = phones.PhoneTracker(avatar.fps)
        self.align = mel_aligned_frames(self.fps)
        self.samples_per_frame = SAMPLE_RATE_HZ / self.fps
        window = avatar.head.audio_window
        self.ahead = window - window // 2 - 1          # future frames in a frame's audio-net window
        if avatar.mouth is not None:                   # ... and in the mouth predictor's
            self.ahead = max(self.ahead, avatar.mouth.predictor.radius)
        self.lookahead_s = (self.ahead + 0.5) / self.fps + MEL_WINDOW_S
        if self.phones is not None:   # a frame at a block's start waits for the block, its context and the window
            from synctalk.audio import phones

            self.lookahead_s = (self.ahead + 0.5) / self.fps + phones.BLOCK_S + phones.CONTEXT_S + \
                3 * phones.SMOOTH_S + 1 / phones.LABEL_HZ
        self._make_drive = lambda n: make_drive(
            n, avatar.subject.poses.cpu().numpy(), avatar.subject.expressions.cpu().numpy(),
            avatar.head.expression_names, avatar.subject.train, self.fps, options.pose, options.blink,
            options.still_frame, seed=options.seed, torso_tracks=avatar.subject.torso_tracks.cpu().numpy())
        self.drive = self._make_drive(int(horizon_s * self.fps))
        self.audio = np.zeros(0, np.float32)   # samples from self.audio_start on
        self.audio_start = 0
        self.features: dict[int, np.ndarray] = {}
        self.done = 0                          # frames rendered so far
        self.received = 0                      # samples received so far

    def push(self, chunk: np.ndarray, last: bool = False) -> list[np.ndarray]:
        """Add audio; returns the frames that became renderable (all remaining ones when ``last``)."""
        self.audio = np.concatenate([self.audio, np.asarray(chunk, np.float32)])
        self.received += len(chunk)
        total = int(round(self.received / SAMPLE_RATE_HZ * self.fps)) if last else None
        if self.phones is not None:
            self.phones.feed(chunk)
            if last:
                self.phones.finish()
        if last:
            ready_features = ready = total
        else:
            heard_s = self.received / SAMPLE_RATE_HZ
            ready_features = max(0, math.floor(heard_s * self.fps - 0.5 - MEL_WINDOW_S * self.fps) + 1)
            if self.phones is not None:
                ready_features = min(ready_features, self.phones.ready())
            ready = max(0, ready_features - self.ahead)
        if ready <= self.done:
            return []
        if ready > len(self.drive.pose_frames):  # a stream longer than the horizon: extend the schedule
            self.drive = self._make_drive(2 * ready)
        self._compute_features(ready_features, total)
        frames = list(range(self.done, ready))
        images = self._render(frames, total)
        self.done = ready
        self._forget()
        return images

    def _compute_features(self, upto: int, total: int | None) -> None:
        have = max(self.features) + 1 if self.features else 0
        if upto <= have:
            return
        columns = []
        for part in self.parts:
            if part == "phones":
                columns.append(self.phones.features(have, upto))
                continue
            first = max(0, have - int(math.ceil(self.context_s * self.fps)))
            first -= first % self.align
            start = int(round(first * self.samples_per_frame))
            segment = self.audio[start - self.audio_start:]
            n = (total if total is not None else upto) - first
            columns.append(self.avatar.audio_features(segment, n, backend=part)[have - first:upto - first])
        rows = columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
        for k in range(have, upto):
            self.features[k] = rows[k - have]

    def _render(self, frames: list[int], total: int | None) -> list[np.ndarray]:
        from synctalk.inference.video import render_frames

        lo = max(0, frames[0] - self.avatar.head.audio_window)
        hi = max(self.features) + 1
        stack = np.stack([self.features[k] for k in range(lo, hi)])
        # the audio net clamps windows at the clip's ends: the start is frame 0, the end only known at the last chunk
        shifted = _ShiftedDrive(self.drive, lo)
        return render_frames(self.avatar, stack, shifted, [k - lo for k in frames], self.options.size, None)

    def _forget(self) -> None:
        """Drop features and audio no later frame needs (memory stays flat on endless streams)."""
        keep_frame = max(0, self.done - self.avatar.head.audio_window - int(math.ceil(self.context_s
                                                                                             * self.fps)) - 1)
        keep_frame -= keep_frame % self.align
        for k in [k for k in self.features if k < keep_frame - self.avatar.head.audio_window]:
            del self.features[k]
        keep_sample = int(round(keep_frame * self.samples_per_frame))
        if keep_sample > self.audio_start:
            self.audio = self.audio[keep_sample - self.audio_start:]
            self.audio_start = keep_sample


@dataclass
class _ShiftedDrive:
    drive: object
    offset: int

    def __post_init__(self):
        d, o = self.drive, self.offset
        self.pose_frames, self.c2w, self.expressions = d.pose_frames[o:], d.c2w[o:], d.expressions[o:]
        self.torso_tracks = None if d.torso_tracks is None else d.torso_tracks[o:]


class FrameSink:
    """Where streamed frames go: an mp4 (audio muxed at the end) or raw RGB24 bytes on a pipe/file."""

    def __init__(self, out: str, fps: float):
        self.out, self.fps = out, fps
        self.raw = out == "-" or not out.lower().endswith(".mp4")
        self.writer = None
        self.handle = None
        self.audio: list[np.ndarray] = []
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.raw:
            if self.handle is None:
                if self.out != "-":
                    Path(self.out).parent.mkdir(parents=True, exist_ok=True)
                self.handle = sys.stdout.buffer if self.out == "-" else open(self.out, "wb")  # noqa: SIM115
            try:
                self.handle.write(np.ascontiguousarray(image).tobytes())
                self.handle.flush()
            except BrokenPipeError:
                raise SyncTalkError(f"the program reading the stream from {'stdout' if self.out == '-' else self.out} "
                                    f"closed it after {self.frames} frames; the stream stopped") from None
            except OSError as exc:
                from synctalk.io.atomic import disk_full_error, is_disk_full

                if is_disk_full(exc):
                    raise disk_full_error(self.out, what=f"the stream ({self.frames} frames written)") from exc
                raise
        else:
            if self.writer is None:
                from synctalk.io.media import VideoWriter

                self.writer = VideoWriter(Path(self.out).with_suffix(".video.mp4"), self.fps)
            self.writer.write(image)
        self.frames += 1

    def close(self, audio: np.ndarray | None) -> None:
        if self.raw:
            if self.handle is not None and self.handle is not sys.stdout.buffer:
                self.handle.close()
            return
        if self.writer is None:
            raise UserInputError("the stream produced no frames (was the audio shorter than one frame?)")
        silent = self.writer.close()
        mux_audio(silent, audio, Path(self.out))
        silent.unlink(missing_ok=True)


def mux_audio(video: Path, samples: np.ndarray, out: Path) -> None:
    """Copy ``video``'s stream into ``out`` with 16 kHz ``samples`` as AAC (no re-encoding of the video)."""
    import subprocess
    import tempfile

    from synctalk.io.atomic import atomic_path
    from synctalk.io.media import ffmpeg_exe, write_wav

    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as target:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, samples, SAMPLE_RATE_HZ)
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-i", str(wav), "-map", "0:v:0", "-map",
               "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "160k", "-f", "mp4", str(target)]
        subprocess.run(cmd, check=True, capture_output=True)


def stream(workspace: str | Path, source: str, out: str, options=None, rate: int = SAMPLE_RATE_HZ,
           chunk_s: float = 0.2, realtime: bool = True, device="cpu") -> StreamReport:
    """Stream ``source`` (a file path, or "-" for raw PCM on stdin) through the avatar into ``out`` (an .mp4, a
    raw RGB24 file, or "-" for stdout)."""
    from synctalk.inference.avatar import Avatar
    from synctalk.inference.video import RenderOptions, apply_mouth_options, check_options

    options = options or RenderOptions()
    if options.portrait:
        raise UserInputError("stream renders the subject's frame; --portrait is for `synctalk render`")
    check_options(options)
    if not rate > 0:
        raise UserInputError(f"--rate must be a sample rate in Hz > 0 (e.g. 16000), got {rate}")
    if not chunk_s > 0:
        raise UserInputError(f"--chunk must be a length in seconds > 0 (e.g. 0.2), got {chunk_s}")
    if out != "-":
        from synctalk.io.outputs import check_output_file

        check_output_file(out, "stream output", inputs=[None if source == "-" else source])
    avatar = apply_mouth_options(Avatar.load(workspace, device), options)
    renderer = StreamRenderer(avatar, options)
    chunks = pcm_chunks(sys.stdin.buffer, rate, chunk_s) if source == "-" else file_chunks(source, chunk_s,
                                                                                            realtime)
    sink = FrameSink(out, avatar.fps)
    report = StreamReport(0, 0.0, 0.0, lookahead_s=renderer.lookahead_s)
    keep_audio = not sink.raw
    heard: list[np.ndarray] = []
    start = time.perf_counter()

    def emit(images: list[np.ndarray], arrived: float) -> None:
        for image in images:
            sink.write(image)
        if images:
            report.latencies_s.append(time.perf_counter() - arrived)
        report.n_frames += len(images)

    for chunk in chunks:
        arrived = time.perf_counter()
        if keep_audio:
            heard.append(chunk)
        emit(renderer.push(chunk), arrived)
    emit(renderer.push(np.zeros(0, np.float32), last=True), time.perf_counter())
    report.wall_seconds = time.perf_counter() - start
    report.audio_seconds = renderer.received / SAMPLE_RATE_HZ
    sink.close(np.concatenate(heard) if heard else None)
    return report
