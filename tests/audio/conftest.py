"""Synthetic sync clips for the audio tests."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.audio import mel as melspec
from synctalk.audio.sync_data import MARGIN, SyncClip, valid_centres

FPS = 25.0


def make_synthetic_clip(n_frames: int = 200, seed: int = 0) -> SyncClip:
    """Mouth brightness and audio loudness follow the same random per-frame signal (in sync)."""
    rng = np.random.default_rng(seed)
    signal = rng.uniform(0, 1, n_frames)
    crops = np.repeat((40 + 180 * signal)[:, None, None], 48 + 2 * MARGIN, 1).repeat(96 + 4 * MARGIN, 2)
    crops = (crops + rng.normal(0, 5, crops.shape)).clip(0, 255).astype(np.uint8)
    n_mel = int(n_frames * melspec.MEL_FPS / FPS)
    frame_of_mel = np.minimum((np.arange(n_mel) * FPS / melspec.MEL_FPS).astype(int), n_frames - 1)
    mel = np.repeat((-3 + 6 * signal[frame_of_mel])[:, None], 80, 1).astype(np.float32)
    face = np.ones(n_frames, bool)
    return SyncClip("synthetic", crops, mel, FPS, face, valid_centres(face))



@pytest.fixture
def synthetic_clip():
    """`synthetic_clip(n_frames=200, seed=0)`: a SyncClip whose mouth and audio follow one random signal."""
    return make_synthetic_clip
