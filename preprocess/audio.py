"""Step `audio`: the subject's speech as 16 kHz mono, exactly as long as the frames, sample 0 = frame 0.

The length check runs before any heavy work (`check_lengths`), so a wrong `--audio` file fails in seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.errors import MediaError
from synctalk.io.media import MediaInfo, load_speech, probe, write_wav

log = logging.getLogger("synctalk.preprocess")

SILENCE_RMS = 1e-4  # about -80 dBFS


@dataclass(frozen=True)
class LengthCheck:
    video_s: float
    audio_s: float
    max_frames: int | None  # set when both are cut to the shorter


def check_lengths(video: Path, info: MediaInfo, audio: Path | None, fps: float, tolerance_s: float,
                  trim_to_shorter: bool) -> LengthCheck:
    """Compare the video's and the speech's durations; fail with advice when they differ by more than
    `tolerance_s` (unless `trim_to_shorter`)."""
    video_s = info.duration_s - info.video_start_s
    if audio is not None:
        audio_info = probe(audio)
        if not audio_info.has_audio:
            raise MediaError(f"{audio}: --audio file has no audio stream")
        audio_s, what = audio_info.duration_s, f"--audio {audio}"
    else:
        if not info.has_audio:
            raise MediaError(f"{video}: has no audio track and no --audio FILE was given. Pass the speech that "
                             f"belongs to this video with --audio (wav, flac, mp3, m4a...).")
        audio_s, what = info.duration_s - info.video_start_s, "its audio track"
    difference = audio_s - video_s
    max_frames = None
    if abs(difference) > tolerance_s:
        if not trim_to_shorter:
            relation = "shorter" if difference < 0 else "longer"
            raise MediaError(
                f"the speech ({what}, {audio_s:.2f} s) is {relation} than the video {video} ({video_s:.2f} s) by "
                f"{abs(difference):.2f} s. Give the audio that was recorded with this video, or add "
                f"preprocess.trim_to_shorter=true to cut both to {min(audio_s, video_s):.2f} s.")
        max_frames = int(math.floor(min(audio_s, video_s) * fps))
        log.warning("audio %.2f s and video %.2f s differ; both are cut to %.2f s (preprocess.trim_to_shorter)",
                    audio_s, video_s, max_frames / fps)
    return LengthCheck(video_s, audio_s, max_frames)


def write_speech(video: Path, audio: Path | None, out: Path, n_frames: int, fps: float,
                 sample_rate_hz: int) -> dict:
    """Decode, align and pad/trim the speech to exactly `n_frames / fps` seconds; write `out` (wav)."""
    speech = load_speech(video, audio, sample_rate_hz)
    target = int(round(n_frames / fps * sample_rate_hz))
    change_s = (target - len(speech)) / sample_rate_hz
    if len(speech) < target:
        speech = np.concatenate([speech, np.zeros(target - len(speech), np.float32)])
    speech = speech[:target]
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2))) if len(speech) else 0.0
    if rms < SILENCE_RMS:
        log.warning("the speech is silent (RMS %.1e): the model cannot learn lip sync from it; check the audio",
                    rms)
    write_wav(out, speech, sample_rate_hz)
    return {"source": str(audio) if audio else "video audio track", "seconds_padded": round(max(change_s, 0), 4),
            "seconds_trimmed": round(max(-change_s, 0), 4),
            "rms_dbfs": round(20 * math.log10(max(rms, 1e-12)), 1)}
