"""A subject's per-frame conditionings as tensors on the compute device (small: no images).

    subject = load_subject(ds, device, expression_names=("eyeBlinkLeft", "eyeBlinkRight"))
    subject.poses[frame], subject.expressions[frame], subject.torso_tracks[frame]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SubjectTensors", "load_subject"]


@dataclass
class SubjectTensors:
    """What training and rendering read per frame, on one device."""

    features: torch.Tensor      # [N, ...] audio features
    expressions: torch.Tensor   # [N, E]
    mouth: torch.Tensor         # [N, 27] jaw/mouth blendshapes standardised over the training frames
    poses: torch.Tensor         # [N, 4, 4] c2w
    pose_vectors: torch.Tensor  # [N, 6]
    torso_tracks: torch.Tensor  # [N, 2, 3] canonical → frame (normalised)
    K: torch.Tensor             # [3, 3]
    train: list[int]
    val: list[int]
    val_is_train: bool = False  # the subject has no validation frames: `val` is the last training frame


def load_subject(ds, device, expression_names, poses: str = "stabilised",
                 features: np.ndarray | None = None) -> SubjectTensors:
    """The conditionings of a :class:`synctalk.data.SubjectDataset` on ``device``; ``poses`` "stabilised" or "raw";
    ``features`` replaces the subject's audio features (another backend's, see synctalk.audio.workspace)."""
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES, expression_from_blendshapes
    from synctalk.models.torso import pose_vector

    c2w = torch.as_tensor(np.array(ds.poses if poses == "stabilised" else ds.poses_raw), dtype=torch.float32,
                          device=device)
    blend = torch.as_tensor(np.array(ds.blendshapes), dtype=torch.float32, device=device)
    features = np.asarray(ds.audio_features) if features is None else features
    mouth = expression_from_blendshapes(blend, MOUTH_BLENDSHAPE_NAMES)
    train_mouth = mouth[ds.split("train")]
    val = ds.split("val")
    if not val:
        import logging

        logging.getLogger("synctalk.train").warning(
            "%s: splits.json has no validation frames (preprocess.val_fraction=0?); the PSNR shown during "
            "training is measured on the last training frame, not on held-out frames", ds.root / "splits.json")
    return SubjectTensors(
        features=torch.as_tensor(np.array(features), dtype=torch.float32, device=device),
        expressions=expression_from_blendshapes(blend, expression_names),
        mouth=(mouth - train_mouth.mean(0)) / train_mouth.std(0).clamp_min(1e-3),
        poses=c2w, pose_vectors=pose_vector(c2w),
        torso_tracks=torch.as_tensor(np.array(ds.torso_track), dtype=torch.float32, device=device),
        K=torch.as_tensor(ds.intrinsics, dtype=torch.float32, device=device),
        train=ds.split("train"), val=val or ds.split("train")[-1:], val_is_train=not val)
