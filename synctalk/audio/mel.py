"""Mel front end of the Face-Sync Controller, with the talking-head conventions (Wav2Lip / SyncTalk AVE).

16 kHz mono → pre-emphasis 0.97 → |STFT| (n_fft 800, hop 200, Hann window 800, centred frames: 80 mel frames/s)
→ 80 mel bands (55-7600 Hz, Slaney) → dB (20·log10, floor 1e-5, minus 20 dB reference level) → symmetric
normalisation of [-100, 0] dB to [-4, 4], clipped.

Mel frame `j` is centred on time `j / 80` s. Video frame `i` at `fps` shows time `[i / fps, (i + 1) / fps)`; its
audio window is the 16 mel frames (0.2 s) centred on the frame's centre `(i + 0.5) / fps`. Windows that reach
past either end of the audio are padded with the silence value -4.

    mel = melspectrogram(samples)            # [T, 80] float32, T = len(samples) // 200 + 1
    win = frame_windows(mel, n_frames, 25)   # [N, 80, 16]: row i is the window of video frame i
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from synctalk.errors import MediaError

SAMPLE_RATE_HZ = 16000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN_HZ = 55.0
FMAX_HZ = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
WINDOW = 16                       # mel frames per video frame (0.2 s)
MEL_FPS = SAMPLE_RATE_HZ / HOP    # 80 mel frames per second
SILENCE = -MAX_ABS
CHUNK_FRAMES = 48000              # mel frames per STFT chunk (10 min): memory stays bounded for long audio


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN_HZ,
                               fmax=FMAX_HZ).astype(np.float32)  # [80, 401]


def to_mono_16k(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Any shape `[S]`, `[S, C]` or `[C, S]` (C ≤ 8) at any rate → float32 mono at 16 kHz (channel mean)."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    if samples.ndim == 2:
        channel_axis = 0 if samples.shape[0] <= 8 and samples.shape[0] < samples.shape[1] else 1
        samples = samples.mean(axis=channel_axis)
    if samples.ndim != 1:
        raise MediaError(f"audio samples must be [samples] or [samples, channels], got shape {samples.shape}")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise MediaError("audio contains NaN or infinite samples")
    if sample_rate_hz != SAMPLE_RATE_HZ:
        if sample_rate_hz <= 0:
            raise MediaError(f"invalid sample rate {sample_rate_hz} Hz")
        import soxr

        samples = soxr.resample(samples, sample_rate_hz, SAMPLE_RATE_HZ).astype(np.float32)
    return samples


def melspectrogram(samples: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Normalised log-mel spectrogram `[T, 80]` float32 in [-4, 4], `T = S // 200 + 1` for S samples at 16 kHz.

    Long audio is transformed in chunks of `CHUNK_FRAMES` mel frames; the result equals the one-shot transform.
    """
    x = to_mono_16k(samples, sample_rate_hz)
    if x.size == 0:
        raise MediaError("the audio is empty (0 samples)")
    x = np.append(x[:1], x[1:] - PREEMPHASIS * x[:-1])
    pad = N_FFT // 2
    x = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    n_frames = 1 + (x.size - N_FFT) // HOP
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as scipy/librosa "hann"
    basis = _mel_basis()
    out = np.empty((n_frames, N_MELS), np.float32)
    for start in range(0, n_frames, CHUNK_FRAMES):
        stop = min(n_frames, start + CHUNK_FRAMES)
        frames = np.lib.stride_tricks.sliding_window_view(x[start * HOP:(stop - 1) * HOP + N_FFT], N_FFT)[::HOP]
        magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).astype(np.float32)  # [t, 401]
        mel = magnitude @ basis.T
        db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
        out[start:stop] = np.clip(2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS, -MAX_ABS, MAX_ABS)
    return out


def window_starts(frames: np.ndarray, fps: float) -> np.ndarray:
    """First mel frame of the window of each (possibly fractional) video frame index: the window of frame `i` is
    centred on `(i + 0.5) / fps` s."""
    centres = (np.asarray(frames, np.float64) + 0.5) * (MEL_FPS / fps)
    return np.floor(centres - WINDOW / 2 + 0.5).astype(np.int64)


def windows_at(mel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mel windows `[B, 80, 16]` (bins x time) starting at mel frames `starts` `[B]`, silence past the ends."""
    index = np.asarray(starts, np.int64)[:, None] + np.arange(WINDOW)[None, :]  # [B, 16]
    inside = (index >= 0) & (index < len(mel))
    windows = np.where(inside[..., None], mel[np.clip(index, 0, max(len(mel) - 1, 0))], np.float32(SILENCE))
    return np.ascontiguousarray(windows.transpose(0, 2, 1), dtype=np.float32)


def frame_windows(mel: np.ndarray, n_frames: int, fps: float, offset_frames: float = 0.0) -> np.ndarray:
    """Per-frame mel windows `[n_frames, 80, 16]`, row i centred on frame i (+ `offset_frames`: positive = later
    audio, for sync search)."""
    return windows_at(mel, window_starts(np.arange(n_frames) + offset_frames, fps))


def silent_fraction(mel: np.ndarray, threshold: float = -3.0) -> float:
    """Fraction of mel frames whose loudest band is below `threshold` (about -87 dB): near-digital silence."""
    return float((mel.max(axis=1) < threshold).mean()) if len(mel) else 1.0
