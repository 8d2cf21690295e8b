"""Gap filling and the zero-lag temporal filter of the landmarks step (synthetic tracks, exact expectations)."""

from __future__ import annotations

import numpy as np

from synctalk.data.contract import FACE_DETECTED, FACE_INTERPOLATED, FACE_MISSING
from synctalk.face.landmarks import FaceTrack, fill_gaps, runs, smooth_track


def make_track(values: np.ndarray, flags: list[int]) -> FaceTrack:
    n = len(values)
    landmarks = np.repeat(values[:, None, None], 478, axis=1).repeat(3, axis=2).astype(np.float32)
    blend = np.repeat(values[:, None], 52, axis=1).astype(np.float32) / max(1.0, float(np.abs(values).max()))
    return FaceTrack(landmarks, blend, np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)), np.array(flags, np.uint8))


def test_runs():
    assert runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 2), (4, 4), (7, 7)]
    assert runs(np.zeros(3, bool)) == [] and runs(np.ones(2, bool)) == [(0, 1)]


def test_fill_gaps_interpolates_short_and_flags_long():
    values = np.arange(12, dtype=np.float32) * 10
    d, m = FACE_DETECTED, FACE_MISSING
    track = make_track(values, [m, d, d, m, m, d, d, m, m, m, m, d])
    filled = fill_gaps(track, max_gap=2)
    assert filled.flags.tolist() == [2, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1]
    lm = filled.landmarks[:, 0, 0]
    assert lm[0] == 10                                       # start gap: holds the first face
    assert np.allclose(lm[3:5], [30, 40])                    # linear between frames 2 (20) and 5 (50)
    assert np.allclose(lm[7:11], [70, 80, 90, 100])          # long gap: filled (no zeros) but excluded
    assert filled.flags[7] == FACE_MISSING and filled.flags[3] == FACE_INTERPOLATED


def test_smoothing_has_no_lag_and_keeps_speech_peaks():
    fps = 25.0
    t = np.arange(200) / fps
    clean = 0.5 + 0.4 * np.sin(2 * np.pi * 4.0 * t)          # 4 Hz: syllable rate
    noisy = clean + np.random.default_rng(0).normal(0, 0.03, t.size)
    track = make_track(noisy.astype(np.float32), [FACE_DETECTED] * t.size)
    smooth = smooth_track(track, window=5).landmarks[:, 0, 0]
    lags = np.arange(-5, 6)
    xcorr = [np.dot(np.roll(smooth, k)[10:-10] - 0.5, clean[10:-10] - 0.5) for k in lags]
    assert lags[int(np.argmax(xcorr))] == 0                   # zero phase
    amplitude = (smooth[10:-10].max() - smooth[10:-10].min()) / 0.8
    assert amplitude > 0.85                                   # peaks kept

    slow = 0.5 + 0.4 * np.sin(2 * np.pi * 0.5 * t)           # head motion: jitter is what the filter removes
    jittery = slow + np.random.default_rng(1).normal(0, 0.03, t.size)
    steady = smooth_track(make_track(jittery.astype(np.float32), [FACE_DETECTED] * t.size), 5).landmarks[:, 0, 0]
    rms = lambda x: float(np.sqrt(np.mean((x - slow)[5:-5] ** 2)))  # noqa: E731
    assert rms(steady) < 0.7 * rms(jittery)


def test_smoothing_respects_excluded_frames():
    values = np.r_[np.zeros(10), np.full(10, 100.0)].astype(np.float32)
    flags = [FACE_DETECTED] * 10 + [FACE_MISSING] + [FACE_DETECTED] * 9
    smooth = smooth_track(make_track(values, flags), window=5).landmarks[:, 0, 0]
    assert np.allclose(smooth[:10], 0) and np.allclose(smooth[11:], 100)  # no bleeding across the gap
