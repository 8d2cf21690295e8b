"""Face-Sync Controller: mel front end, audio-visual sync model and its training, per-frame audio features,
lip-sync scoring.

    from synctalk.audio import sync_score
    score = sync_score("video.mp4", checkpoint="sync.pt")    # .offset, .lse_d, .lse_c, .curve

Modules: `mel` (front end), `lips` (lower-face crops), `sync_model` (towers, checkpoints, Wav2Lip key mapping),
`sync_data` (clips and batches), `sync_train` (training), `features` (backends ave/mel/hubert/wav2vec2),
`score` (offset, LSE-D/C), `syncnet` (official SyncNet judge).
"""

from __future__ import annotations

_EXPORTS = {
    "sync_score": "synctalk.audio.score",
    "score_clip": "synctalk.audio.score",
    "SyncScore": "synctalk.audio.score",
    "compute_features": "synctalk.audio.features",
    "melspectrogram": "synctalk.audio.mel",
    "frame_windows": "synctalk.audio.mel",
    "train_sync_model": "synctalk.audio.sync_train",
    "load_sync_model": "synctalk.audio.sync_model",
}


def __getattr__(name: str):
    # torch loads on first use, so `import synctalk.audio` stays cheap
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synctalk.audio' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)
