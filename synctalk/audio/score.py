"""Lip-sync scoring with the SyncNet protocol: offset, LSE-D and LSE-C.

For every video window (5 frames centred on frame i) and every candidate offset o in [-K, K] frames, the
distance d[i, o] is the Euclidean distance between the video embedding of window i and the audio embedding of
the window centred on frame i - o. Then, as in the SyncNet evaluation code:

    curve[o]  = mean_i d[i, o]                 (distance vs offset)
    offset    = argmin_o curve[o]              (negative: the audio comes late)
    LSE-D     = min_o curve[o]                 (lower is better)
    LSE-C     = median_o curve[o] - LSE-D      (higher is better: confidence that the minimum is real)

and the same per window (`window_offset`, `window_distance`, `window_confidence`). With unit-norm embeddings the
distances lie in [0, 2]. Example: a clip whose audio was delayed by 4 frames (the sound of frame i plays at
i + 4) matches best at o = -4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synctalk.audio.sync_data import SyncClip, audio_windows, video_windows


@dataclass
class SyncScore:
    offsets: np.ndarray             # [K] candidate offsets, frames
    curve: np.ndarray               # [K] mean distance per offset
    offset: int                     # estimated audio-video offset, frames (0: in sync; -4: audio 4 frames late)
    lse_d: float
    lse_c: float
    frames: np.ndarray              # [W] centre frame of each scored window
    window_distances: np.ndarray    # [W, K]
    fps: float

    @property
    def window_offset(self) -> np.ndarray:
        return self.offsets[self.window_distances.argmin(1)]

    @property
    def window_distance(self) -> np.ndarray:
        return self.window_distances.min(1)

    @property
    def window_confidence(self) -> np.ndarray:
        return np.median(self.window_distances, 1) - self.window_distances.min(1)

    def summary(self) -> dict:
        return {"offset_frames": int(self.offset), "lse_d": round(float(self.lse_d), 4),
                "lse_c": round(float(self.lse_c), 4), "windows": len(self.frames),
                "curve": {int(o): round(float(d), 4) for o, d in zip(self.offsets, self.curve, strict=True)}}


@torch.no_grad()
def score_clip(model, clip: SyncClip, max_offset: int = 15, frames: np.ndarray | None = None,
               batch: int = 256) -> SyncScore:
    """Score `clip` (default: every valid window) with a sync model (ours, or `syncnet.SyncNetJudge`)."""
    was_training = model.training
    model.eval()
    frames = clip.centres if frames is None else np.asarray(frames, np.int64)
    if len(frames) == 0:
        from synctalk.errors import DatasetError

        raise DatasetError(f"{clip.name}: no 5-frame window with a face to score")
    offsets = np.arange(-max_offset, max_offset + 1)
    embed_video, embed_audio = _embedders(model)
    video = torch.cat([embed_video(clip, frames[i:i + batch]) for i in range(0, len(frames), batch)])   # [W, D]
    # audio windows for every frame a window may look at: frames[0] - K .. frames[-1] + K
    lo, hi = int(frames.min()) - max_offset, int(frames.max()) + max_offset
    audio_frames = np.arange(lo, hi + 1)
    audio = torch.cat([embed_audio(clip, audio_frames[i:i + batch])
                       for i in range(0, len(audio_frames), batch)])                            # [A, D]
    audio = audio.to(video.device)
    index = torch.from_numpy(frames[:, None] - offsets[None, :] - lo).to(video.device)           # [W, K]
    distances = (video[:, None, :] - audio[index]).norm(dim=-1).float().cpu().numpy()           # [W, K]
    model.train(was_training)
    curve = distances.mean(0)
    best = int(curve.argmin())
    return SyncScore(offsets, curve, int(offsets[best]), float(curve[best]), float(np.median(curve) - curve[best]),
                     frames, distances, clip.fps)


def _embedders(model):
    """(video, audio) embedding functions of a judge: its own when it has them (official SyncNet), else the
    sync model's towers on lower-face crops and mel windows (built on the CPU, moved to the model's device)."""
    if hasattr(model, "video_embeddings"):
        return model.video_embeddings, model.audio_embeddings
    device = next(model.parameters()).device
    return (lambda clip, frames: model.embed_visual(video_windows(clip, frames).to(device)),
            lambda clip, frames: model.embed_audio(audio_windows(clip, frames).to(device)))


def sync_score(video: str | Path | SyncClip, audio: str | Path | None = None, checkpoint: str | Path | None = None,
               model=None, max_offset: int = 15, start_s: float = 0.0, end_s: float | None = None,
               device: str = "cpu", progress: bool = False) -> SyncScore:
    """Offset, LSE-D and LSE-C of a talking video (see module docstring).

    Args:
        video: a video file (its own audio unless `audio` is given), a subject directory, or a SyncClip.
        checkpoint: sync model from `synctalk sync-train`, or `syncnet_v2.model` (the official SyncNet, selected
            by its file name); ignored when `model` is given. For evaluation the model must not have been trained
            on the frames it judges.
        start_s, end_s: score only the windows whose frames lie in this time range.
    """
    from synctalk.audio.sync_data import clip_from_subject, clip_from_video
    from synctalk.errors import UserInputError

    if model is None:
        if checkpoint is None:
            raise UserInputError("sync_score needs a sync model: pass checkpoint= (synctalk sync-train output or "
                                 "syncnet_v2.model)")
        model = load_judge(checkpoint, device)
    if isinstance(video, SyncClip):
        clip = video
    elif Path(video).is_dir():
        clip = clip_from_subject(video, progress)
    else:
        clip = clip_from_video(video, audio, progress=progress, faces=hasattr(model, "video_embeddings"))
    first = int(np.ceil(start_s * clip.fps))
    last = len(clip) if end_s is None else int(np.floor(end_s * clip.fps))
    clip = clip.subset(first, last)
    return score_clip(model, clip, max_offset)


def load_judge(checkpoint: str | Path, device: str = "cpu"):
    """A model with `embed_visual`/`embed_audio` for scoring: official SyncNet for `*.model` files, else ours."""
    if Path(checkpoint).suffix == ".model":
        from synctalk.audio.syncnet import load_syncnet

        return load_syncnet(checkpoint, device)
    from synctalk.audio.sync_model import load_sync_model
    from synctalk.errors import UserInputError

    model = load_sync_model(checkpoint, device)
    if not model.has_visual:
        raise UserInputError(f"{checkpoint}: holds only an audio encoder; scoring needs a full sync model")
    return model


def offset_curve_plot(scores: dict[str, SyncScore], path: str | Path, title: str = "") -> None:
    """Plot distance vs offset for several scores (one line each) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synctalk.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, score in scores.items():
        ax.plot(score.offsets, score.curve, marker=".", label=f"{name}: offset {score.offset:+d}, "
                f"LSE-D {score.lse_d:.3f}, LSE-C {score.lse_c:.3f}")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("offset (frames; negative = audio late)")
    ax.set_ylabel("mean embedding distance")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
