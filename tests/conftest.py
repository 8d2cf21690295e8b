"""Shared fixtures: real test data (skipped with a reason when absent), a CUDA marker, tiny subjects."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("SYNCTALK_TEST_DATA", REPO.parent / "shared" / "data"))

# Tests never download: the model cache is the shared test data, and offline mode is on.
os.environ.setdefault("SYNCTALK_MODELS", str(TEST_DATA / "models"))
os.environ.setdefault("SYNCTALK_OFFLINE", "1")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU (torch.cuda.is_available() "
                                                                 "is False)")


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA


def real_file(relative: str) -> Path:
    """Path of a file in the shared test data; skips the test when it is not there."""
    path = TEST_DATA / relative
    if not path.is_file():
        pytest.skip(f"real test data {relative} not found under {TEST_DATA} (set SYNCTALK_TEST_DATA)")
    return path


@pytest.fixture
def landmarker_model() -> Path:
    """The Face Landmarker bundle: `synctalk evaluate` scores LMD and the blendshape errors with it; skips the test
    when the shared test data does not have it."""
    return real_file("models/face_landmarker.task")


def build_subject(root: Path, n_frames: int = 12, size: tuple[int, int] = (24, 32), fps: float = 25.0,
                  steps: tuple[str, ...] | None = None, audio: np.ndarray | None = None,
                  frames: np.ndarray | None = None, source: dict | None = None) -> Path:
    """A small, complete, valid subject directory. Default: random frames, silent audio and random [16, 8]
    features; with `audio` (16 kHz), real `mel` features of it ([80, 16], so new audio can be rendered)."""
    from synctalk.data import STEPS, SubjectWriter
    from synctalk.io.media import write_wav

    steps = tuple(STEPS) if steps is None else steps
    height, width = size
    rng = np.random.default_rng(0)
    writer = SubjectWriter(root)
    writer.init_meta(n_frames, fps, width, height, 16000, source=source or {"path": "synthetic"})
    if "frames" in steps:
        for i in range(n_frames):
            image = frames[i] if frames is not None else rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            writer.write_frame("frames", i, image)
        writer.mark_step("frames", seconds=0.1)
    if audio is None:
        audio = np.zeros(int(round(n_frames / fps * 16000)), np.float32)
    if "audio" in steps:
        write_wav(writer.root / "audio.wav", audio)
        writer.mark_step("audio")
    if "landmarks" in steps:
        writer.save_array("landmarks.npy", rng.uniform(0, min(size), (n_frames, 478, 3)))
        writer.save_array("face_flags.npy", np.ones(n_frames))
        writer.save_array("blendshapes.npy", rng.uniform(0, 1, (n_frames, 52)))
        writer.save_array("face_transforms.npy", np.tile(np.eye(4), (n_frames, 1, 1)))
        writer.mark_step("landmarks")
    if "parsing" in steps:
        for i in range(n_frames):
            writer.write_frame("parsing", i, rng.integers(0, 8, (height, width), dtype=np.uint8))
        writer.mark_step("parsing")
    if "background" in steps:
        from synctalk.io.images import write_image

        write_image(writer.root / "background.png", np.zeros((height, width, 3), np.uint8))
        for i in range(n_frames):
            writer.write_frame("gt", i, frames[i] if frames is not None else np.zeros((height, width, 3), np.uint8))
        writer.mark_step("background")
    if "torso" in steps:
        for i in range(n_frames):
            writer.write_frame("torso", i, np.zeros((height, width, 3), np.uint8))
        writer.mark_step("torso")
    if "torso_track" in steps:
        writer.save_array("torso_track.npy", np.tile(np.eye(2, 3), (n_frames, 1, 1)))
        writer.mark_step("torso_track")
    if "pose" in steps:
        writer.save_array("poses.npy", np.tile(np.eye(4), (n_frames, 1, 1)))
        writer.save_array("poses_raw.npy", np.tile(np.eye(4), (n_frames, 1, 1)))
        writer.save_array("pose_errors.npy", np.ones((n_frames, 2)))
        writer.write_json("intrinsics.json", {"fx": 30.0, "fy": 30.0, "cx": width / 2, "cy": height / 2,
                                              "width": width, "height": height})
        writer.mark_step("pose")
    if "audio_features" in steps:
        if audio.any():
            from synctalk.audio.features import compute_features

            features = compute_features("mel", audio, 16000, n_frames, fps)
            writer.save_array("audio_features.npy", features.features)
            writer.write_json("audio_features.json", features.info)
        else:
            writer.save_array("audio_features.npy", rng.normal(size=(n_frames, 16, 8)))
            writer.write_json("audio_features.json", {"backend": "mel", "shape": [16, 8]})
        writer.mark_step("audio_features")
    if "splits" in steps:
        writer.write_json("splits.json", {"train": list(range(n_frames - 2)),
                                          "val": [n_frames - 2, n_frames - 1]})
        writer.mark_step("splits")
    return writer.root


@pytest.fixture
def make_subject(tmp_path):
    """Build a small, complete, valid subject directory: `make_subject(n_frames=12, size=(24, 32))`."""

    def build(n_frames: int = 12, size: tuple[int, int] = (24, 32), fps: float = 25.0, name: str = "subject",
              steps: tuple[str, ...] | None = None) -> Path:
        return build_subject(tmp_path / name, n_frames, size, fps, steps)

    return build


def interrupt_on_call(function, call: int = 3):
    """``function`` wrapped to raise KeyboardInterrupt (a Ctrl-C) on its ``call``-th call."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return function(*args, **kwargs)
    return wrapped


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """16 kHz test audio: a 150 Hz buzz whose loudness follows random syllables (0.1-0.3 s)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 16000))
    envelope = np.zeros(n, np.float32)
    t = 0
    while t < n:
        length = int(rng.uniform(0.1, 0.3) * 16000)
        envelope[t:t + length] = rng.uniform(0.05, 0.5)
        t += length + int(rng.uniform(0.02, 0.1) * 16000)
    buzz = np.sign(np.sin(2 * np.pi * 150 * np.arange(n) / 16000)).astype(np.float32)
    return envelope * buzz


def tiny_train_config(head: str = "nerf", **overrides):
    """A training config that runs every stage in seconds on tiny subjects (``head``: nerf or gaussian)."""
    from synctalk.config import GaussianHeadConfig, ModelConfig, NerfHeadConfig, SyncTalkConfig, TrainConfig

    train = dict(head_steps=4, lips_steps=2, torso_steps=2, portrait_steps=2, portrait_frames=2, portrait_patch=16,
                 mouth_generator_steps=2, mouth_generator_width=8, mouth_generator_size=16,
                 rays=64, patch=8, eval_size=16, eval_frames=1, eval_every=2, checkpoint_every=2, log_every=1,
                 keep_last=2)
    train.update(overrides)
    nerf = NerfHeadConfig(grid_resolution=16, levels=2, base=8, finest=32, hidden=16, max_steps=32)
    gaussian = GaussianHeadConfig(count=96, mouth_count=8, levels=2, base=8, finest=32, table_log2=10, hidden=16,
                                  relocate_every=1)
    return SyncTalkConfig(device="cpu", model=ModelConfig(head=head, nerf=nerf, gaussian=gaussian),
                          train=TrainConfig(**train))


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory):
    """A workspace trained (all stages, a few steps) on a 32 x 32 subject with mel features of speech-like audio
    and an original 48 x 48 video (the subject is its centre crop), once per session: (workspace, subject)."""
    import torch

    from synctalk.io.media import write_video
    from synctalk.train.trainer import train

    root = tmp_path_factory.mktemp("trained")
    n_frames, fps = 20, 25.0
    rng = np.random.default_rng(1)
    originals = np.repeat(np.repeat(rng.integers(0, 255, (n_frames, 12, 12, 3)), 4, 1), 4, 2).astype(np.uint8)
    video = write_video(root / "original.mp4", originals, fps)
    source = {"path": str(video), "width": 48, "height": 48, "fps": fps}
    subject = build_subject(root / "subject", n_frames, (32, 32), fps, audio=speech_like(n_frames / fps),
                            frames=originals[:, 8:40, 8:40], source=source)
    from synctalk.data import SubjectWriter

    SubjectWriter(subject).update_meta(crop={"x0": 8, "y0": 8, "side": 32, "source_width": 48,
                                             "source_height": 48})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(subject, root / "ws", tiny_train_config(), progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "ws", subject


def _quick_config(**preprocess):
    from synctalk.config import PreprocessConfig, SyncTalkConfig, SyncTrainConfig

    return SyncTalkConfig(preprocess=PreprocessConfig(**preprocess),
                          sync=SyncTrainConfig(width=0.125, batch_size=8, max_steps=6, eval_every=3))


@pytest.fixture(scope="session")
def quick_config():
    """`quick_config(**preprocess)`: the default config with a sync model trained for a few steps only (tests
    check the plumbing, not lip sync)."""
    return _quick_config


@pytest.fixture(scope="session")
def may_subject(tmp_path_factory):
    """`synctalk preprocess` on the real 5 s clip, once per test session: (video, subject dir, report)."""
    from preprocess.run import preprocess

    video = real_file("video/may_5s_25fps.mp4")
    real_file("models/face_landmarker.task")
    root = tmp_path_factory.mktemp("may") / "subject"
    cfg = _quick_config()
    report = preprocess(video, root, cfg.preprocess, progress=False, full_config=cfg)
    return video, root, report


# ------------------------------------------------------------------------------------------ audio: sync clips
SYNTHETIC_FPS = 25.0


def make_synthetic_clip(n_frames: int = 200, seed: int = 0):
    """Mouth brightness and audio loudness follow the same random per-frame signal (in sync)."""
    from synctalk.audio import mel as melspec
    from synctalk.audio.sync_data import MARGIN, SyncClip, valid_centres

    rng = np.random.default_rng(seed)
    signal = rng.uniform(0, 1, n_frames)
    crops = np.repeat((40 + 180 * signal)[:, None, None], 48 + 2 * MARGIN, 1).repeat(96 + 4 * MARGIN, 2)
    crops = (crops + rng.normal(0, 5, crops.shape)).clip(0, 255).astype(np.uint8)
    n_mel = int(n_frames * melspec.MEL_FPS / SYNTHETIC_FPS)
    frame_of_mel = np.minimum((np.arange(n_mel) * SYNTHETIC_FPS / melspec.MEL_FPS).astype(int), n_frames - 1)
    mel = np.repeat((-3 + 6 * signal[frame_of_mel])[:, None], 80, 1).astype(np.float32)
    face = np.ones(n_frames, bool)
    return SyncClip("synthetic", crops, mel, SYNTHETIC_FPS, face, valid_centres(face))


@pytest.fixture
def synthetic_clip():
    """`synthetic_clip(n_frames=200, seed=0)`: a SyncClip whose mouth and audio follow one random signal."""
    return make_synthetic_clip


# ------------------------------------------------------------------------------------------ models
@pytest.fixture
def one_torch_thread():
    """Tiny networks run several times faster on one intra-op thread than with thread hand-offs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """`synctalk ARGV` in-process: (exit code, stdout, stderr)."""
    from synctalk.cli import main as cli_main

    code = cli_main.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def checksums(*roots: Path) -> dict[str, str]:
    """Path → sha256 of every file under ``roots`` (files or folders): compare before and after a command."""
    sums = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder no file can be created in: read-only permissions, or (as root, who ignores them) /sys/kernel."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for candidate in (folder, Path("/sys/kernel")):
            try:
                fd, name = tempfile.mkstemp(dir=candidate)
            except OSError:
                yield candidate
                return
            os.close(fd)
            os.unlink(name)
        pytest.skip("no folder here refuses writes (root on a system without a read-only /sys)")
    finally:
        folder.chmod(0o700)
