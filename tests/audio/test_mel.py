"""Mel front end: conventions, alignment of windows to video frames, chunking, odd inputs."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.audio import mel as melspec
from synctalk.errors import MediaError


def _reference_mel(samples: np.ndarray) -> np.ndarray:
    """The conventions spelled out with librosa's STFT (reflect-padded centred frames)."""
    import librosa

    x = np.append(samples[:1], samples[1:] - 0.97 * samples[:-1])
    spec = np.abs(librosa.stft(x, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect"))
    mel = librosa.feature.melspectrogram(S=spec, sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, power=1.0)
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T


def test_matches_the_librosa_spelling_of_the_conventions():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.normal(size=16000)).astype(np.float32)
    ours = melspec.melspectrogram(samples)
    assert ours.shape == (81, 80)  # 16000 // 200 + 1 centred frames
    np.testing.assert_allclose(ours, _reference_mel(samples), atol=2e-3)
    assert ours.min() >= -4 and ours.max() <= 4


def test_chunked_transform_equals_one_shot(monkeypatch):
    rng = np.random.default_rng(1)
    samples = (0.1 * rng.normal(size=16000 * 3)).astype(np.float32)
    whole = melspec.melspectrogram(samples)
    monkeypatch.setattr(melspec, "CHUNK_FRAMES", 37)
    np.testing.assert_allclose(melspec.melspectrogram(samples), whole, atol=1e-5)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_window_of_a_frame_is_centred_on_the_frame(fps):
    """A tone burst at the centre time of frame k sits in the middle of frame k's window, and windows have
    16 mel frames (0.2 s) for every frame of the clip."""
    n_frames, k = int(3 * fps), int(1.5 * fps)
    samples = np.zeros(int(n_frames / fps * 16000), np.float32)
    centre = int(round((k + 0.5) / fps * 16000))
    t = np.arange(-160, 160)
    samples[centre + t] = 0.5 * np.sin(2 * np.pi * 1000 * t / 16000)  # 20 ms burst
    windows = melspec.frame_windows(melspec.melspectrogram(samples), n_frames, fps)
    assert windows.shape == (n_frames, 80, 16)
    loudness = windows[k].max(axis=0)  # per mel frame of the window
    assert int(np.argmax(loudness)) == melspec.WINDOW // 2  # mel frames k-8 .. k+7 around the centre
    # the neighbouring frame's window sees the burst 80/fps mel frames earlier
    later = windows[k + 1].max(axis=0)
    shift = 80 / fps
    assert abs(int(np.argmax(later)) - (np.argmax(loudness) - shift)) <= 1


def test_edges_are_padded_with_silence_and_offsets_shift_windows():
    mel = np.random.default_rng(0).uniform(-3, 3, (40, 80)).astype(np.float32)
    windows = melspec.frame_windows(mel, 10, 25.0)
    assert (windows[0, :, :6] == melspec.SILENCE).all()  # frame 0's window starts 0.08 s before the audio
    shifted = melspec.frame_windows(mel, 10, 25.0, offset_frames=1)
    np.testing.assert_array_equal(shifted[3], windows[4])
    assert melspec.frame_windows(mel, 0, 25.0).shape == (0, 80, 16)


def test_stereo_and_other_rates_become_16k_mono():
    t = np.arange(8000) / 8000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([tone, tone], 1)  # [S, 2] at 8 kHz
    mono16 = melspec.to_mono_16k(stereo, 8000)
    assert mono16.shape == (16000,)
    assert melspec.melspectrogram(stereo, 8000).shape == melspec.melspectrogram(mono16).shape
    as_int16 = (stereo * 32767).astype(np.int16).T  # [2, S] int16
    np.testing.assert_allclose(melspec.to_mono_16k(as_int16, 8000), mono16, atol=1e-3)


def test_bad_audio():
    with pytest.raises(MediaError, match="empty"):
        melspec.melspectrogram(np.zeros(0, np.float32))
    with pytest.raises(MediaError, match="NaN"):
        melspec.melspectrogram(np.array([0.0, np.nan], np.float32))
    silent = melspec.melspectrogram(np.zeros(16000, np.float32))
    assert (silent == melspec.SILENCE).all() and melspec.silent_fraction(silent) == 1.0
    assert melspec.melspectrogram(np.zeros(10, np.float32)).shape == (1, 80)  # shorter than a frame
