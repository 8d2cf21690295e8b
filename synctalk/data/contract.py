"""The subject directory contract (docs/dataset.md is the prose version; keep the two in step).

A subject directory is written step by step by `synctalk preprocess` and read by `synctalk train`. Each step
owns a set of files; `meta.json["steps"]` records which steps finished.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_VERSION = 1
N_LANDMARKS = 478

# MediaPipe Face Landmarker blendshape order (ARKit names); blendshapes.npy columns follow it.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
N_BLENDSHAPES = len(BLENDSHAPE_NAMES)  # 52

# parsing/NNNNNN.png label values. "head" in the sense of the models = HEAD_LABELS.
PARSING_LABELS: dict[str, int] = {
    "background": 0,
    "head": 1,          # face skin, hair, ears (the head minus the regions below)
    "neck": 2,
    "torso": 3,         # shoulders, clothes
    "lips": 4,
    "mouth_interior": 5,  # teeth, tongue, cavity
    "eyes": 6,
    "brows": 7,
}
HEAD_LABELS = (1, 4, 5, 6, 7)
MOUTH_LABELS = (4, 5)
TORSO_LABELS = (2, 3)  # neck and torso
MAX_LABEL = max(PARSING_LABELS.values())

# face_flags.npy values.
FACE_MISSING, FACE_DETECTED, FACE_INTERPOLATED = 0, 1, 2


@dataclass(frozen=True)
class ArraySpec:
    """A per-subject .npy file: `shape` uses "N" for the frame count and None for a free dimension."""

    filename: str
    shape: tuple[int | str, ...]  # "N" = frame count; a trailing "..." allows any further dimensions
    dtype: str


@dataclass(frozen=True)
class Step:
    """A preprocessing step and the files it owns."""

    name: str
    arrays: tuple[ArraySpec, ...] = ()
    frame_dirs: tuple[str, ...] = ()     # folders with one image per frame, NNNNNN.<ext>
    files: tuple[str, ...] = ()          # other files


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("frames", frame_dirs=("frames",)),
    Step("audio", files=("audio.wav",)),
    Step("landmarks", arrays=(
        ArraySpec("landmarks.npy", ("N", N_LANDMARKS, 3), "float32"),
        ArraySpec("face_flags.npy", ("N",), "uint8"),
        ArraySpec("blendshapes.npy", ("N", N_BLENDSHAPES), "float32"),
        ArraySpec("face_transforms.npy", ("N", 4, 4), "float32"),
    )),
    Step("parsing", frame_dirs=("parsing",)),
    Step("background", frame_dirs=("gt",), files=("background.png",)),
    Step("torso", frame_dirs=("torso",)),
    Step("torso_track", arrays=(ArraySpec("torso_track.npy", ("N", 2, 3), "float32"),)),
    Step("pose", arrays=(
        ArraySpec("poses.npy", ("N", 4, 4), "float32"),
        ArraySpec("poses_raw.npy", ("N", 4, 4), "float32"),
        ArraySpec("pose_errors.npy", ("N", 2), "float32"),
    ), files=("intrinsics.json",)),
    Step("audio_features", arrays=(ArraySpec("audio_features.npy", ("N", "..."), "float32"),),
         files=("audio_features.json",)),
    Step("splits", files=("splits.json",)),
)}

# What `synctalk train` needs.
TRAIN_STEPS = ("frames", "audio", "landmarks", "parsing", "background", "torso", "torso_track", "pose",
               "audio_features", "splits")

FRAME_NAME_DIGITS = 6
# Extension each per-frame folder is written with; label maps must be lossless.
FRAME_DIR_EXTENSIONS = {"frames": ".jpg", "gt": ".jpg", "torso": ".jpg", "parsing": ".png"}
COLOUR_DIRS = ("frames", "gt", "torso")
META_FILENAME = "meta.json"
# Whose the folder is: the input files and frame settings it was made from (synctalk/data/ownership.py).
MANIFEST_FILENAME = "manifest.json"
REQUIRED_META_KEYS = ("format_version", "n_frames", "fps", "width", "height", "sample_rate_hz")


def frame_filename(index: int, ext: str) -> str:
    return f"{index:0{FRAME_NAME_DIGITS}d}{ext}"
