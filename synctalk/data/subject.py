"""Read and write subject directories (contract in synctalk/data/contract.py and docs/dataset.md).

`SubjectDataset` validates everything it can cheaply on open (files present, frame counts, array shapes and
dtypes, audio length, splits) and streams images from disk through a bounded LRU cache, so memory does not
grow with the length of the video. Arrays are memory-mapped.

    ds = SubjectDataset("subjects/may", require=TRAIN_STEPS)
    rgb = ds.image(10)                 # [H, W, 3] uint8
    lms = ds.landmarks[10]             # [478, 3] float32, pixels
"""

from __future__ import annotations

import json
import re
import shlex
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from synctalk.data.contract import (
    BLENDSHAPE_NAMES,
    COLOUR_DIRS,
    FACE_MISSING,
    FORMAT_VERSION,
    FRAME_DIR_EXTENSIONS,
    MAX_LABEL,
    META_FILENAME,
    PARSING_LABELS,
    REQUIRED_META_KEYS,
    STEPS,
    ArraySpec,
    frame_filename,
)
from synctalk.errors import DatasetError, MediaError
from synctalk.io.atomic import atomic_save_npy, atomic_write_json
from synctalk.io.images import read_image, write_image

_FRAME_FILE = re.compile(r"^(\d{6})\.(jpg|png)$")
STEP_OF_FRAME_DIR = {folder: name for name, step in STEPS.items() for folder in step.frame_dirs}
STEP_OF_FILE = {**{spec.filename: name for name, step in STEPS.items() for spec in step.arrays},
                **{filename: name for name, step in STEPS.items() for filename in step.files}}


def preprocess_command(root: str | Path, force: str | None = None) -> str | None:
    """The `synctalk preprocess` command that makes the subject at `root` again from its own input and its own
    config (`SUBJECT/config.yaml`), so it passes the folder's identity check and resumes: finished steps are
    skipped, missing or broken ones redone; `force` adds `--force STEP`. None when the folder does not say what it
    was made from."""
    from synctalk.data.ownership import recorded_identity

    root = Path(root)
    recorded = recorded_identity(root) or {}
    video, audio = recorded.get("video") or {}, recorded.get("audio") or {}
    if not video.get("path") or (recorded.get("legacy") and not video.get("sha256")):
        return None
    root = root.absolute()  # the command works from any folder
    words = ["synctalk", "preprocess", str(video["path"]), "-o", str(root)]
    if audio.get("path"):
        words += ["--audio", str(audio["path"])]
    if (root / "config.yaml").is_file():
        words += ["--config", str(root / "config.yaml")]
    if force:
        words += ["--force", force]
    return shlex.join(words)


def repair_hint(root: str | Path, step: str | None = None) -> str:
    """How to make or repair the subject at `root`, as a command that works (see preprocess_command)."""
    command = preprocess_command(root, step)
    if command:
        return f"repair it with `{command}`"
    target = shlex.quote(str(Path(root).absolute()))
    if (Path(root) / META_FILENAME).is_file():  # a subject that does not record its video
        force = f" --force {step}" if step else ""
        return f"redo it from the video it was made from with `synctalk preprocess YOUR_VIDEO -o {target}{force}`"
    return f"make it with `synctalk preprocess YOUR_VIDEO -o {target}`"


class FrameCache:
    """Least-recently-used cache of decoded images with a fixed number of entries."""

    def __init__(self, max_items: int):
        self.max_items = max(0, int(max_items))
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any, load) -> np.ndarray:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if self.max_items:
            self._items[key] = value
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return value


class SubjectDataset:
    """A validated, streaming view of a subject directory.

    Args:
        root: the subject directory.
        require: steps that must have finished (e.g. `contract.TRAIN_STEPS`); others are validated if present.
        cache_frames: decoded images kept per image folder.
    """

    def __init__(self, root: str | Path, require: Iterable[str] = ("frames",), cache_frames: int = 64,
                 validate: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: subject directory not found; {repair_hint(self.root)}")
        self.meta = read_meta(self.root)
        self.n_frames = int(self.meta["n_frames"])
        self.fps = float(self.meta["fps"])
        self.height, self.width = int(self.meta["height"]), int(self.meta["width"])
        self.sample_rate_hz = int(self.meta["sample_rate_hz"])
        done = self.meta.get("steps", {})
        self.steps = tuple(name for name in STEPS if done.get(name, {}).get("done"))
        missing = [name for name in require if name not in self.steps]
        unknown = [name for name in require if name not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; steps are {list(STEPS)}")
        if missing:
            raise DatasetError(f"{self.root}: preprocessing step(s) {', '.join(missing)} not done (meta.json lists "
                               f"{', '.join(self.steps) or 'none'}); {repair_hint(self.root)}")
        self._caches = {d: FrameCache(cache_frames) for d in FRAME_DIR_EXTENSIONS}
        self._frame_ext: dict[str, str] = {}
        self._arrays: dict[str, np.ndarray] = {}
        if validate:
            for name in self.steps:
                self._validate_step(name)

    # ------------------------------------------------------------------ validation
    def _validate_step(self, name: str) -> None:
        step = STEPS[name]
        for filename in step.files:
            if not (self.root / filename).is_file():
                raise DatasetError(f"{self.root / filename}: missing (meta.json says step '{name}' finished); "
                                   f"{repair_hint(self.root, name)}")
        for folder in step.frame_dirs:
            self._validate_frame_dir(folder)
        for spec in step.arrays:
            self._arrays[spec.filename] = self._load_array(spec)
        getattr(self, f"_validate_{name}", lambda: None)()

    def _validate_frame_dir(self, folder: str) -> None:
        path = self.root / folder
        if not path.is_dir():
            raise DatasetError(f"{path}: folder missing; {repair_hint(self.root, STEP_OF_FRAME_DIR[folder])}")
        indices, extensions = [], set()
        for entry in path.iterdir():
            m = _FRAME_FILE.match(entry.name)
            if m:
                indices.append(int(m[1]))
                extensions.add("." + m[2])
        if len(extensions) > 1:
            raise DatasetError(f"{path}: mixes {' and '.join(sorted(extensions))} files; use one format, or "
                               f"{repair_hint(self.root, STEP_OF_FRAME_DIR[folder])}")
        if len(indices) != self.n_frames or (indices and max(indices) != self.n_frames - 1):
            present = set(indices)
            gaps = [i for i in range(self.n_frames) if i not in present][:5]
            detail = f"; first missing: {', '.join(frame_filename(i, '') for i in gaps)}" if gaps else ""
            raise DatasetError(f"{path}: {len(indices)} frame images but meta.json says n_frames="
                               f"{self.n_frames}{detail}; {repair_hint(self.root, STEP_OF_FRAME_DIR[folder])}")
        ext = extensions.pop() if extensions else FRAME_DIR_EXTENSIONS[folder]
        if folder == "parsing" and ext != ".png":
            raise DatasetError(f"{path}: label maps must be lossless .png, found {ext}")
        self._frame_ext[folder] = ext
        if self.n_frames:
            self._read_frame(folder, 0)  # size/channels check on one frame

    def _load_array(self, spec: ArraySpec) -> np.ndarray:
        path = self.root / spec.filename
        step = STEP_OF_FILE[spec.filename]
        if not path.is_file():
            raise DatasetError(f"{path}: missing (meta.json says step '{step}' finished); "
                               f"{repair_hint(self.root, step)}")
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{path}: not a readable .npy file ({exc}); {repair_hint(self.root, step)}") from None
        expected = [self.n_frames if d == "N" else d for d in spec.shape]
        prefix_only = expected and expected[-1] == "..."
        wanted = expected[:-1] if prefix_only else expected
        actual = list(array.shape[:len(wanted)] if prefix_only else array.shape)
        if actual != wanted or (prefix_only and array.ndim < len(wanted)):
            shape_text = ", ".join(str(d) for d in spec.shape).replace("N", f"N={self.n_frames}")
            raise DatasetError(f"{path}: shape {tuple(array.shape)}, expected [{shape_text}]"
                               + (" (frame count differs from meta.json n_frames)"
                                  if array.shape and array.shape[0] != self.n_frames else ""))
        if array.dtype != np.dtype(spec.dtype):
            raise DatasetError(f"{path}: dtype {array.dtype}, expected {spec.dtype}")
        return array

    def _validate_audio(self) -> None:
        import soundfile

        path = self.root / "audio.wav"
        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise DatasetError(f"{path}: unreadable wav ({exc})") from None
        if info.samplerate != self.sample_rate_hz or info.channels != 1:
            raise DatasetError(f"{path}: {info.samplerate} Hz, {info.channels} channel(s); expected "
                               f"{self.sample_rate_hz} Hz mono")
        video_s, audio_s = self.n_frames / self.fps, info.frames / info.samplerate
        if abs(audio_s - video_s) > 1.0 / self.fps:
            raise DatasetError(f"{path}: lasts {audio_s:.3f} s but the {self.n_frames} frames at {self.fps:g} fps "
                               f"last {video_s:.3f} s (must agree within one frame)")

    def _validate_landmarks(self) -> None:
        flags = self._arrays["face_flags.npy"]
        if flags.size and int(flags.max()) > 2:
            raise DatasetError(f"{self.root / 'face_flags.npy'}: values must be 0 (missing), 1 (detected) or "
                               f"2 (interpolated), found {int(flags.max())}")
        self._check_finite("blendshapes.npy")

    def _validate_pose(self) -> None:
        self._check_finite("poses.npy")
        self._check_finite("poses_raw.npy")
        intr = self._read_json("intrinsics.json")
        for key in ("fx", "fy", "cx", "cy"):
            if not isinstance(intr.get(key), int | float) or (key in ("fx", "fy") and intr[key] <= 0):
                raise DatasetError(f"{self.root / 'intrinsics.json'}: '{key}' must be a positive number")
        if (intr.get("width"), intr.get("height")) != (self.width, self.height):
            raise DatasetError(f"{self.root / 'intrinsics.json'}: image size {intr.get('width')}x"
                               f"{intr.get('height')} differs from meta.json {self.width}x{self.height}")

    def _validate_audio_features(self) -> None:
        info = self._read_json("audio_features.json")
        if "backend" not in info:
            raise DatasetError(f"{self.root / 'audio_features.json'}: missing 'backend'")

    def _validate_splits(self) -> None:
        splits = self._read_json("splits.json")
        path = self.root / "splits.json"
        for name in ("train", "val"):
            values = splits.get(name)
            if not isinstance(values, list) or not all(isinstance(i, int) for i in values):
                raise DatasetError(f"{path}: '{name}' must be a list of frame indices")
            bad = [i for i in values if not 0 <= i < self.n_frames]
            if bad:
                raise DatasetError(f"{path}: '{name}' has frame indices outside 0..{self.n_frames - 1}: {bad[:5]}")
        if not splits["train"]:
            raise DatasetError(f"{path}: the train split is empty")
        if set(splits["train"]) & set(splits["val"]):
            raise DatasetError(f"{path}: train and val share frames")
        if "face_flags.npy" in self._arrays:
            flags = self._arrays["face_flags.npy"]
            excluded = [i for i in splits["train"] if flags[i] == FACE_MISSING]
            if excluded:
                raise DatasetError(f"{path}: train split contains frames without a face: {excluded[:5]}")

    def _check_finite(self, filename: str) -> None:
        array = self._arrays[filename]
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        if bad.size:
            raise DatasetError(f"{self.root / filename}: NaN/inf at frame(s) {bad[:5].tolist()}")

    def _read_json(self, filename: str) -> dict:
        path = self.root / filename
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a JSON object")
        return data

    # ------------------------------------------------------------------ per-frame images
    def _read_frame(self, folder: str, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} out of range 0..{self.n_frames - 1}")
        if folder not in self._frame_ext:
            raise DatasetError(f"{self.root}: no '{folder}' images (step not done); {repair_hint(self.root)}")

        def load() -> np.ndarray:
            path = self.root / folder / frame_filename(index, self._frame_ext[folder])
            try:
                image = read_image(path)
            except MediaError as exc:
                raise DatasetError(f"{exc}; {repair_hint(self.root, STEP_OF_FRAME_DIR[folder])}") from None
            expected = (self.height, self.width, 3) if folder in COLOUR_DIRS else (self.height, self.width)
            if image.shape != expected:
                raise DatasetError(f"{path}: image shape {image.shape}, expected {expected} (meta.json size)")
            if folder == "parsing" and int(image.max()) > MAX_LABEL:
                raise DatasetError(f"{path}: label {int(image.max())} is not a parsing label (0..{MAX_LABEL})")
            image.setflags(write=False)  # cached: callers must copy before editing
            return image

        return self._caches[folder].get(index, load)

    def image(self, index: int) -> np.ndarray:
        """Source frame `[H, W, 3] uint8` RGB (read-only)."""
        return self._read_frame("frames", index)

    def gt(self, index: int) -> np.ndarray:
        """Frame with the background replaced by background.png `[H, W, 3] uint8`."""
        return self._read_frame("gt", index)

    def torso(self, index: int) -> np.ndarray:
        """Torso plate (head removed, neck filled) `[H, W, 3] uint8`."""
        return self._read_frame("torso", index)

    def parsing(self, index: int) -> np.ndarray:
        """Label map `[H, W] uint8` (values in contract.PARSING_LABELS)."""
        return self._read_frame("parsing", index)

    def cached_frames(self) -> int:
        return sum(len(cache) for cache in self._caches.values())

    # ------------------------------------------------------------------ arrays and files
    def _array(self, filename: str, step: str) -> np.ndarray:
        if filename not in self._arrays:
            raise DatasetError(f"{self.root}: step '{step}' not done, no {filename}; {repair_hint(self.root)}")
        return self._arrays[filename]

    @property
    def landmarks(self) -> np.ndarray:
        """`[N, 478, 3] float32`: x, y in pixels of the crop (origin top-left corner), z relative depth (pixels)."""
        return self._array("landmarks.npy", "landmarks")

    @property
    def face_flags(self) -> np.ndarray:
        return self._array("face_flags.npy", "landmarks")

    @property
    def blendshapes(self) -> np.ndarray:
        return self._array("blendshapes.npy", "landmarks")

    @property
    def poses(self) -> np.ndarray:
        """`[N, 4, 4] float32` camera-to-world (OpenCV camera axes), stabilised."""
        return self._array("poses.npy", "pose")

    @property
    def torso_track(self) -> np.ndarray:
        """`[N, 2, 3] float32` affine maps of the torso, canonical → frame, in [-1, 1]^2 image coordinates."""
        return self._array("torso_track.npy", "torso_track")

    @property
    def poses_raw(self) -> np.ndarray:
        return self._array("poses_raw.npy", "pose")

    @property
    def intrinsics(self) -> np.ndarray:
        """`[3, 3] float64` pinhole matrix K in pixels."""
        if "pose" not in self.steps:
            raise DatasetError(f"{self.root}: step 'pose' not done, no intrinsics.json; {repair_hint(self.root)}")
        intr = self._read_json("intrinsics.json")
        return np.array([[intr["fx"], 0, intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]], np.float64)

    @property
    def audio_features(self) -> np.ndarray:
        return self._array("audio_features.npy", "audio_features")

    def split(self, name: str) -> list[int]:
        if "splits" not in self.steps:
            raise DatasetError(f"{self.root}: step 'splits' not done; {repair_hint(self.root)}")
        splits = self._read_json("splits.json")
        if name not in splits:
            raise DatasetError(f"{self.root / 'splits.json'}: no split '{name}' (has {', '.join(splits)})")
        return list(splits[name])

    def audio(self) -> np.ndarray:
        """The subject's speech `[S] float32` at `sample_rate_hz`; sample 0 is aligned with frame 0."""
        from synctalk.io.media import read_wav

        if "audio" not in self.steps:
            raise DatasetError(f"{self.root}: step 'audio' not done; {repair_hint(self.root)}")
        samples, _ = read_wav(self.root / "audio.wav")
        return samples

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return (f"SubjectDataset('{self.root}', {self.n_frames} frames, {self.width}x{self.height} @ "
                f"{self.fps:g} fps, steps: {', '.join(self.steps) or 'none'})")


def step_problems(root: str | Path) -> dict[str, str]:
    """The finished steps (per meta.json) whose files fail validation (missing, wrong count or shape...), with the
    reason; each step is checked on its own, so one broken step does not hide another."""
    ds = SubjectDataset(root, require=(), cache_frames=0, validate=False)
    problems = {}
    for name in ds.steps:
        try:
            ds._validate_step(name)
        except DatasetError as exc:
            problems[name] = str(exc)
    return problems


def read_meta(root: Path) -> dict[str, Any]:
    path = root / META_FILENAME
    if not path.is_file():
        raise DatasetError(f"{path}: missing, so {root} is not a subject directory (or its preprocessing stopped "
                           f"before the first step finished); {repair_hint(root)}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); {repair_hint(root)}") from None
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; {repair_hint(root)}")
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {meta['format_version']}, this synctalk reads "
                           f"{FORMAT_VERSION}; {repair_hint(root, 'all')}")
    return meta


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the data (read from metadata, nothing is imported)."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy", "mediapipe", "opencv-contrib-python", "imageio-ffmpeg"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class SubjectWriter:
    """Writes a subject directory piece by piece; every file is written atomically.

    Steps call `save_array`/`write_frame`/`write_json`, then `mark_step(name, stats)` last, so a step
    interrupted half-way is simply not marked done.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def meta_path(self) -> Path:
        return self.root / META_FILENAME

    def read_meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}

    def init_meta(self, n_frames: int, fps: float, width: int, height: int, sample_rate_hz: int,
                  **extra: Any) -> dict[str, Any]:
        from synctalk import __version__

        meta = self.read_meta()
        meta.update(format_version=FORMAT_VERSION, synctalk_version=__version__, n_frames=int(n_frames),
                    fps=float(fps), width=int(width), height=int(height), sample_rate_hz=int(sample_rate_hz),
                    blendshape_names=list(BLENDSHAPE_NAMES), parsing_labels=dict(PARSING_LABELS),
                    versions=package_versions(), **extra)
        meta.setdefault("steps", {})
        atomic_write_json(self.meta_path, meta)
        return meta

    def update_meta(self, **values: Any) -> None:
        meta = self.read_meta()
        meta.update(values)
        atomic_write_json(self.meta_path, meta)

    def mark_step(self, name: str, **stats: Any) -> None:
        if name not in STEPS:
            raise ValueError(f"unknown step '{name}'; steps are {list(STEPS)}")
        meta = self.read_meta()
        meta.setdefault("steps", {})[name] = {"done": True, **stats}
        atomic_write_json(self.meta_path, meta)

    def unmark_steps(self, names: Iterable[str], reset: bool = False) -> None:
        """Mark several steps not done in one write; `reset`: start meta.json afresh (it was unreadable)."""
        meta = {} if reset else self.read_meta()
        steps = meta.setdefault("steps", {})
        removed = [name for name in names if steps.pop(name, None) is not None]
        if reset or removed:
            atomic_write_json(self.meta_path, meta)

    def clear_frame_dir(self, folder: str) -> None:
        """Delete a per-frame folder's images (and temporary files of an interrupted write) before a rerun."""
        path = self.root / folder
        if path.is_dir():
            for entry in path.iterdir():
                if _FRAME_FILE.match(entry.name) or entry.name.startswith("."):
                    entry.unlink()

    def write_frame(self, folder: str, index: int, image: np.ndarray) -> Path:
        path = self.root / folder / frame_filename(index, FRAME_DIR_EXTENSIONS[folder])
        write_image(path, image)
        return path

    def write_frames(self, folder: str, images: Iterable[np.ndarray], workers: int = 1) -> int:
        """Write images 0, 1, 2... of an iterable to `folder` on `workers` threads, so that encoding overlaps
        producing them; at most a few images wait at a time, so memory stays flat on long clips. Returns the count."""
        from concurrent.futures import ThreadPoolExecutor

        workers = max(1, workers)
        count = 0
        with ThreadPoolExecutor(workers) as pool:
            pending: list = []
            for index, image in enumerate(images):
                pending.append(pool.submit(self.write_frame, folder, index, image))
                count += 1
                if len(pending) > 4 * workers:
                    pending.pop(0).result()
            for future in pending:
                future.result()
        return count

    def save_array(self, filename: str, array: np.ndarray) -> Path:
        specs = {spec.filename: spec for step in STEPS.values() for spec in step.arrays}
        array = np.asarray(array)
        if filename in specs:
            array = array.astype(specs[filename].dtype, copy=False)
        atomic_save_npy(self.root / filename, array)
        return self.root / filename

    def write_json(self, filename: str, data: Any) -> Path:
        atomic_write_json(self.root / filename, data)
        return self.root / filename
