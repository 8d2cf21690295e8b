"""The audio features a workspace's head is conditioned on (shared by training and rendering)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synctalk.errors import SyncTalkError

__all__ = ["workspace_features"]


def workspace_features(ds, cfg, workspace: Path, device="cpu") -> tuple[np.ndarray, dict]:
    """The audio features training uses: the subject's, or (``train.audio_backend`` set) that backend's features
    of the subject's audio, computed once into ``WORKSPACE/audio_features.npy`` (+ .json).

    Args:
        ds: the subject (:class:`synctalk.data.SubjectDataset`).
        cfg: the workspace's :class:`synctalk.config.SyncTalkConfig`.

    Returns:
        (features [N, ...] as a NumPy array, their info dict: backend, checkpoint, ...).
    """
    backend = cfg.train.audio_backend
    workspace = Path(workspace)
    info_path, array_path = workspace / "audio_features.json", workspace / "audio_features.npy"
    if backend == "subject":
        return np.asarray(ds.audio_features), json.loads((ds.root / "audio_features.json").read_text())
    if info_path.is_file() and array_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("backend") == backend:
            return np.load(array_path), info
    from synctalk.audio.features import backend_parts, compute_features
    from synctalk.io.atomic import atomic_save_npy, atomic_write_json

    checkpoint = cfg.audio.sync_checkpoint or (ds.root / "sync.pt")
    uses_ave = "ave" in backend_parts(backend)
    if uses_ave and not Path(checkpoint).is_file():
        raise SyncTalkError(f"train.audio_backend={backend} needs a sync model: {checkpoint} is missing; set "
                            "audio.sync_checkpoint")
    result = compute_features(backend, ds.audio(), ds.meta["sample_rate_hz"], len(ds), ds.fps,
                              checkpoint=checkpoint if uses_ave else None, device=device)
    atomic_save_npy(array_path, result.features)
    atomic_write_json(info_path, result.info)
    return result.features, result.info
