"""Subject-directory contract, validation and streaming access (see docs/dataset.md)."""

from synctalk.data.contract import (
    BLENDSHAPE_NAMES,
    HEAD_LABELS,
    PARSING_LABELS,
    STEPS,
    TRAIN_STEPS,
)
from synctalk.data.subject import FrameCache, SubjectDataset, SubjectWriter, read_meta

__all__ = [
    "BLENDSHAPE_NAMES",
    "HEAD_LABELS",
    "PARSING_LABELS",
    "STEPS",
    "TRAIN_STEPS",
    "FrameCache",
    "SubjectDataset",
    "SubjectWriter",
    "read_meta",
]
