"""`synctalk preprocess`: chain the steps that turn a video into a subject directory (docs/dataset.md).

Each step is resumable: it records a signature (its code version, the config keys it reads, the hashes of the
source files it reads, and the run ids of the steps it depends on) when it finishes, and is skipped next time
while the signature is unchanged. `force` reruns a step, and everything that depends on it reruns because the
run id it depends on changes. A step that reruns is first marked not done, so an interruption never leaves a
step marked done over half-rewritten files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synctalk.config import PreprocessConfig, SyncTalkConfig
from synctalk.data import STEPS as CONTRACT_STEPS
from synctalk.data import SubjectDataset, SubjectWriter
from synctalk.data.contract import FACE_MISSING, FRAME_DIR_EXTENSIONS
from synctalk.errors import DatasetError, DiskFullError, MediaError, UserInputError
from synctalk.io.media import MediaInfo, probe

log = logging.getLogger("synctalk.preprocess")


@dataclass
class Context:
    """What every step may read; steps write through `writer`."""

    video: Path
    audio: Path | None
    writer: SubjectWriter
    cfg: PreprocessConfig
    info: MediaInfo
    progress: bool = True
    max_frames: int | None = None
    full: SyncTalkConfig = field(default_factory=SyncTalkConfig)  # other sections (audio, sync, seed)
    device: object = "cpu"   # torch.device of the learnt steps (the sync model and its features)
    _hashes: dict[Path, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.writer.root

    def dataset(self, *require: str) -> SubjectDataset:
        return SubjectDataset(self.root, require=require, cache_frames=0)

    def file_hash(self, path: Path) -> str:
        from synctalk.assets import sha256_of

        if path not in self._hashes:
            self._hashes[path] = sha256_of(path)
        return self._hashes[path]

    def frames(self, ds: SubjectDataset) -> Iterator[np.ndarray]:
        return (ds.image(i) for i in range(len(ds)))

    def per_frame(self, n_frames: int, compute: Callable[[int], np.ndarray], folder: str, desc: str) -> None:
        """compute(i) for every frame on `cfg.workers` threads, writing each result to folder/NNNNNN."""
        from synctalk.progress import track

        def task(index: int) -> None:
            self.writer.write_frame(folder, index, compute(index))

        with ThreadPoolExecutor(max(1, self.cfg.workers)) as pool:
            list(track(pool.map(task, range(n_frames)), desc, total=n_frames, unit="frame", enabled=self.progress,
                       leave=False))


# ---------------------------------------------------------------------------------------------------- steps
def run_frames(ctx: Context) -> dict:
    from preprocess.frames import crop_picture, find_crop, write_frames
    from synctalk.io.media import load_speech

    cfg = ctx.cfg
    crop, search = find_crop(ctx.video, ctx.info, cfg.face_fraction, cfg.detect_every_s, cfg.face,
                             speech=lambda: (load_speech(ctx.video, ctx.audio, cfg.sample_rate_hz), cfg.sample_rate_hz),
                             progress=ctx.progress)
    ctx.writer.clear_frame_dir("frames")
    n_frames = write_frames(ctx.video, ctx.info, crop, ctx.writer, cfg.fps, cfg.size, cfg.workers,
                            max_frames=ctx.max_frames, progress=ctx.progress)
    info = ctx.info
    ctx.writer.init_meta(
        n_frames, cfg.fps, cfg.size, cfg.size, cfg.sample_rate_hz, crop=crop.to_meta(info),
        source={"path": str(ctx.video.resolve()), "sha256": ctx.file_hash(ctx.video), "duration_s": info.duration_s,
                "fps": info.fps, "width": info.width, "height": info.height, "rotation_deg": info.rotation_deg,
                "video_start_s": info.video_start_s,
                "audio_path": str(ctx.audio.resolve()) if ctx.audio else None})
    if cfg.qa:
        crop_picture(ctx.video, info, crop, ctx.root / "qa" / "crop.png", progress=ctx.progress)
    if crop.side < cfg.size:
        log.warning("the face crop is %d px and is enlarged to %d px: the source is low resolution and the "
                    "result will be soft", crop.side, cfg.size)
    return {"frames": n_frames, "crop": asdict(crop), **search}


def run_audio(ctx: Context) -> dict:
    from preprocess.audio import write_speech

    meta = ctx.writer.read_meta()
    return write_speech(ctx.video, ctx.audio, ctx.root / "audio.wav", meta["n_frames"], meta["fps"],
                        ctx.cfg.sample_rate_hz)


def run_landmarks(ctx: Context) -> dict:
    from synctalk.face.landmarks import fill_gaps, runs, smooth_track, track_faces

    ds = ctx.dataset("frames")
    n = len(ds)
    track = track_faces(ctx.frames(ds), n, ds.fps, progress=ctx.progress)
    detected = int((track.flags != FACE_MISSING).sum())
    if detected == 0:
        raise MediaError(f"{ctx.video}: the face landmarker found no face in any of the {n} cropped frames "
                         f"({ctx.root / 'frames'}); check that the face is visible and not tiny")
    track = smooth_track(fill_gaps(track, ctx.cfg.max_gap_frames), ctx.cfg.smooth_window)
    long_gaps = runs(track.flags == FACE_MISSING)
    usable = float((track.flags != FACE_MISSING).mean())
    ranges = ", ".join(f"{a}-{b} ({a / ds.fps:.1f}-{(b + 1) / ds.fps:.1f} s)" for a, b in long_gaps[:10])
    if usable < ctx.cfg.min_face_fraction:
        raise MediaError(f"{ctx.video}: a face is visible in only {usable:.0%} of the frames (no face in frames "
                         f"{ranges}). Trim the video to the part where the person faces the camera, or lower "
                         f"preprocess.min_face_fraction (now {ctx.cfg.min_face_fraction}).")
    if long_gaps:
        log.warning("no face in frames %s: these frames are excluded from training", ranges)
    for name, array in (("landmarks.npy", track.landmarks), ("face_flags.npy", track.flags),
                        ("blendshapes.npy", track.blendshapes), ("face_transforms.npy", track.transforms)):
        ctx.writer.save_array(name, array)
    return {"faces_detected": detected, "faces_detected_fraction": round(detected / n, 4),
            "interpolated": int((track.flags == 2).sum()), "excluded": int((track.flags == FACE_MISSING).sum()),
            "excluded_ranges": long_gaps}


def run_parsing(ctx: Context) -> dict:
    from preprocess.parsing import make_parser, parse_frames

    ds = ctx.dataset("frames", "landmarks")
    parser = make_parser(ctx.cfg.parser)
    ctx.writer.clear_frame_dir("parsing")
    from synctalk.progress import track

    labels = parse_frames(ctx.frames(ds), ds.landmarks, ds.face_flags, parser=parser, workers=ctx.cfg.workers)
    # Parsing runs in order (temporal smoothing); PNG encoding overlaps it on the worker threads.
    ctx.writer.write_frames("parsing", track(labels, "parsing", total=len(ds), unit="frame", enabled=ctx.progress,
                                             leave=False), ctx.cfg.workers)
    return {"parser": ctx.cfg.parser}


def run_background(ctx: Context) -> dict:
    from preprocess.background import composite_gt, estimate_background
    from synctalk.io.images import write_image

    ds = ctx.dataset("frames", "parsing")
    picks = np.unique(np.linspace(0, len(ds) - 1, min(ctx.cfg.background_samples, len(ds))).round().astype(int))
    plate, seen = estimate_background([ds.image(i) for i in picks], [ds.parsing(i) for i in picks])
    write_image(ctx.root / "background.png", plate)
    ctx.writer.clear_frame_dir("gt")
    ctx.per_frame(len(ds), lambda i: composite_gt(ds.image(i), ds.parsing(i), plate), "gt", "gt frames")
    return {"sampled_frames": len(picks), "background_seen_fraction": round(float(seen.mean()), 4)}


def run_torso(ctx: Context) -> dict:
    from preprocess.torso import torso_plate
    from synctalk.io.images import read_image

    ds = ctx.dataset("frames", "parsing", "landmarks", "background")
    plate = read_image(ctx.root / "background.png")
    flags, landmarks = ds.face_flags, ds.landmarks

    def compute(i: int) -> np.ndarray:
        return torso_plate(ds.image(i), ds.parsing(i), None if flags[i] == FACE_MISSING else landmarks[i], plate)

    ctx.writer.clear_frame_dir("torso")
    ctx.per_frame(len(ds), compute, "torso", "torso plates")
    return {}


def run_torso_track(ctx: Context) -> dict:
    from preprocess.qa import torso_track_plot
    from preprocess.torso_track import track_torso

    ds = ctx.dataset("frames", "parsing", "background")
    track = track_torso(len(ds), lambda i: (ds.gt(i), ds.parsing(i)), ctx.cfg.torso_track_motion,
                        workers=ctx.cfg.workers, progress=ctx.progress)
    ctx.writer.save_array("torso_track.npy", track.tracks)
    stats = track.stats(ds.width)
    if stats["interpolated_frames"]:
        log.info("torso track: %d frame(s) without a usable alignment took their neighbours' track",
                 stats["interpolated_frames"])
    if ctx.cfg.qa:
        torso_track_plot(ds, track, ctx.root / "qa" / "torso_track.png")
    return stats


def run_pose(ctx: Context) -> dict:
    from preprocess.pose import estimate_head_poses
    from preprocess.qa import head_axes_sheet, pose_plot

    ds = ctx.dataset("frames", "landmarks")
    cfg = ctx.cfg
    estimate = estimate_head_poses(
        np.asarray(ds.landmarks), np.asarray(ds.face_flags), ds.width, ds.height,
        frames=lambda: ctx.frames(ds), focal_range=tuple(cfg.pose_focal_range), smoothness=cfg.pose_smoothness,
        track_points=cfg.pose_track_points, iterations=cfg.pose_iterations, progress=ctx.progress)
    ctx.writer.save_array("poses.npy", estimate.c2w)
    ctx.writer.save_array("poses_raw.npy", estimate.c2w_raw)
    ctx.writer.save_array("pose_errors.npy", np.stack([estimate.error_raw_px, estimate.error_px], 1))
    K = estimate.K
    ctx.writer.write_json("intrinsics.json", {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                                              "width": ds.width, "height": ds.height})
    ctx.writer.update_meta(pose={k: v for k, v in estimate.stats.items() if not k.startswith("scan")})
    if cfg.qa:
        pose_plot(estimate, ds.fps, ctx.root / "qa" / "pose.png")
        head_axes_sheet(ds, estimate.c2w, estimate.c2w_raw, K, ctx.root / "qa" / "pose_axes.png")
    return {k: estimate.stats[k] for k in ("focal_px", "reprojection_px_raw", "reprojection_px", "jitter_deg_raw",
                                           "jitter_deg", "tracks")}


def split_frames(usable: np.ndarray, val_fraction: float) -> tuple[list[int], list[int]]:
    """Training and validation frames among those with a face (``usable``): validation is the clip's last
    ``val_fraction``, or, when that tail has no face (the person left the frame), the last frames that have one,
    so that validation measures something; none when too few frames have a face."""
    n = len(usable)
    n_val = int(round(n * val_fraction))
    train = [i for i in range(n - n_val) if usable[i]]
    val = [i for i in range(n - n_val, n) if usable[i]]
    if n_val and not val:
        faces = np.flatnonzero(usable).tolist()
        k = max(1, int(round(len(faces) * val_fraction)))
        train, val = (faces[:-k], faces[-k:]) if len(faces) > k else (faces, [])
    return train, val


def run_splits(ctx: Context) -> dict:
    ds = ctx.dataset("landmarks")
    n = len(ds)
    n_val = int(round(n * ctx.cfg.val_fraction))
    usable = ds.face_flags != FACE_MISSING
    train, val = split_frames(usable, ctx.cfg.val_fraction)
    stats: dict = {}
    if n_val and val and val[0] < n - n_val:
        stats["val_moved"] = f"{val[0]}-{val[-1]}"
        log.warning("the last %d frames (preprocess.val_fraction=%g) have no face: frames %d-%d, the last %d with "
                    "a face, are the validation split instead", n_val, ctx.cfg.val_fraction, val[0], val[-1], len(val))
    elif n_val and not val:
        log.warning("only %d frame(s) have a face: none is held out for validation; training reports no "
                    "validation figure", int(usable.sum()))
    if not train:
        raise MediaError(f"{ctx.root}: no frames with a face are left for training (frames with a face: "
                         f"{int(usable.sum())} of {n}); use a clip where the face is visible longer, or lower "
                         f"preprocess.val_fraction (now {ctx.cfg.val_fraction})")
    ctx.writer.write_json("splits.json", {"train": train, "val": val})
    return {"train": len(train), "val": len(val), **stats}


def run_audio_features(ctx: Context) -> dict:
    from synctalk.audio.features import backend_parts, compute_features
    from synctalk.audio.mel import melspectrogram, silent_fraction

    ds = ctx.dataset("frames", "audio", "landmarks")
    audio_cfg = ctx.full.audio
    samples = ds.audio()
    silent = silent_fraction(melspectrogram(samples, ds.sample_rate_hz))
    if silent > 0.9:
        log.warning("%s: %.0f%% of the audio is silent; lip sync cannot be learnt from it", ctx.root / "audio.wav",
                    100 * silent)
    stats: dict = {"backend": audio_cfg.backend, "silent_fraction": round(silent, 4)}
    checkpoint = Path(audio_cfg.sync_checkpoint) if audio_cfg.sync_checkpoint else None
    if "ave" in backend_parts(audio_cfg.backend) and checkpoint is None:
        checkpoint, stats["sync_train"] = train_subject_sync_model(ctx, ds)
    features = compute_features(audio_cfg.backend, samples, ds.sample_rate_hz, len(ds), ds.fps,
                                checkpoint=checkpoint, batch=audio_cfg.feature_batch, device=ctx.device,
                                progress=ctx.progress)
    ctx.writer.save_array("audio_features.npy", features.features)
    ctx.writer.write_json("audio_features.json", features.info)
    return {**stats, "shape": list(features.features.shape)}


def train_subject_sync_model(ctx: Context, ds: SubjectDataset) -> tuple[Path, dict]:
    """Train the sync model on the subject's own clip, minus the validation tail (which stays unseen, so the
    model can judge renders of it), within `sync.subject_budget_minutes`. Resumes an interrupted run of the
    same inputs; a run on other inputs is replaced."""
    from synctalk.audio.sync_data import clip_from_subject
    from synctalk.audio.sync_train import train_sync_model

    done = ctx.writer.read_meta().get("steps", {})
    inputs = {"depends": [done.get(d, {}).get("run_id") for d in ("frames", "audio", "landmarks")],
              "sync": asdict(ctx.full.sync), "seed": ctx.full.seed, "val_fraction": ctx.cfg.val_fraction}
    tag = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    clip = clip_from_subject(ctx.root, ctx.progress)
    _, val = split_frames(np.asarray(ds.face_flags) != FACE_MISSING, ctx.cfg.val_fraction)   # what splits will hold
    n_train = min(val) if val else len(clip)
    train, held = clip.subset(0, n_train, "train"), clip.subset(n_train, len(clip), "val")
    log.info("training the sync model on %d frames of the subject (budget %.1f min)", n_train,
             ctx.full.sync.subject_budget_minutes)
    checkpoint = ctx.root / "sync.pt"
    report = train_sync_model([train], checkpoint, ctx.full.sync, held_out=[held] if len(held.centres) else None,
                              budget_minutes=ctx.full.sync.subject_budget_minutes, seed=ctx.full.seed,
                              device=ctx.device, progress=ctx.progress, log_dir=ctx.root / "logs" / "sync", tag=tag)
    stats = {"steps": report.steps, "seconds": round(report.seconds, 1), "loss": round(report.loss, 4),
             "accuracy": round(report.accuracy, 3), "samples_per_s": round(report.samples_per_s, 1)}
    if report.history:
        stats["val"] = report.history[-1].get("val")
    return checkpoint, stats


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context], dict] | None   # None: built in a later issue, listed as pending
    depends: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ()
    reads_source: bool = False               # hashes the video (and --audio file) into the signature
    version: int = 1                         # bump when the step's output changes for the same inputs
    pending_note: str = ""
    optional_keys: tuple[str, ...] = ()      # config keys in the signature only when not at their default


PIPELINE: tuple[Step, ...] = (
    Step("frames", run_frames, (), ("fps", "size", "face_fraction", "detect_every_s"), reads_source=True,
         optional_keys=("face",)),
    Step("audio", run_audio, ("frames",), ("sample_rate_hz",), reads_source=True),
    Step("landmarks", run_landmarks, ("frames",), ("max_gap_frames", "smooth_window", "min_face_fraction")),
    Step("parsing", run_parsing, ("frames", "landmarks"), ("parser",)),
    Step("background", run_background, ("frames", "parsing"), ("background_samples",)),
    Step("torso", run_torso, ("frames", "parsing", "landmarks", "background")),
    Step("torso_track", run_torso_track, ("frames", "parsing", "background"), ("torso_track_motion",)),
    Step("pose", run_pose, ("frames", "landmarks"),
         ("pose_focal_range", "pose_smoothness", "pose_track_points", "pose_iterations")),
    Step("audio_features", run_audio_features, ("frames", "audio", "landmarks"),
         ("val_fraction", "audio.backend", "audio.sync_checkpoint", "sync", "seed")),
    Step("splits", run_splits, ("landmarks",), ("val_fraction",)),
)
assert tuple(s.name for s in PIPELINE) == tuple(CONTRACT_STEPS), "pipeline and dataset contract disagree"


@dataclass
class StepReport:
    name: str
    status: str            # "ran", "up to date", "not built yet"
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


@dataclass
class PreprocessReport:
    root: Path
    n_frames: int
    fps: float
    steps: list[StepReport]
    seconds: float


def signature(step: Step, ctx: Context, done: dict) -> str:
    cfg, full = asdict(ctx.cfg), asdict(ctx.full)
    defaults = asdict(PreprocessConfig())
    config = {k: _lookup(full, k) if "." in k or k in full else cfg[k] for k in step.config_keys}
    config.update({k: cfg[k] for k in step.optional_keys if cfg[k] != defaults[k]})
    parts = {"step": step.name, "version": step.version, "config": config,
             "depends": {d: done.get(d, {}).get("run_id") for d in step.depends}}
    if step.reads_source:
        parts["video"] = ctx.file_hash(ctx.video)
        parts["audio"] = ctx.file_hash(ctx.audio) if ctx.audio else None
        parts["max_frames"] = ctx.max_frames
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def downstream(names: set[str]) -> set[str]:
    """`names` and every step that depends on them, directly or not."""
    out = set(names)
    for step in PIPELINE:  # PIPELINE is in dependency order
        if out.intersection(step.depends):
            out.add(step.name)
    return out


def identity_settings(ctx_cfg: PreprocessConfig, max_frames: int | None) -> dict:
    """The settings that make a subject folder what it is (with its input files): those of the steps that read the
    source (frames, audio), which replace frames/ and audio.wav when they change, and the cut of the clip."""
    cfg = asdict(ctx_cfg)
    settings = {}
    for step in PIPELINE:
        if step.reads_source:
            for key in step.config_keys + step.optional_keys:
                settings[f"preprocess.{key}"] = cfg[key]
    settings["frames kept (preprocess.trim_to_shorter)"] = "all" if max_frames is None else max_frames
    return settings


def _disk_full(step: Step, ctx: Context, exc: Exception) -> DiskFullError:
    """The disk-full error of `step`, with roughly how much the rest of preprocessing writes: the per-frame image
    folders still to write (frames x the average image size written so far)."""
    from synctalk.io.atomic import free_bytes

    writer = ctx.writer
    meta = writer.read_meta()
    n_frames = int(meta.get("n_frames") or ctx.max_frames or round(ctx.info.duration_s * ctx.cfg.fps))
    sizes = [p.stat().st_size for d in FRAME_DIR_EXTENSIONS if (writer.root / d).is_dir()
             for p in sorted((writer.root / d).glob("0*"))[:200]]
    average = float(np.mean(sizes)) if sizes else 0.0
    names = [s.name for s in PIPELINE]
    folders = [d for name in names[names.index(step.name):] for d in CONTRACT_STEPS[name].frame_dirs]
    need = n_frames * average * len(folders)
    free = free_bytes(writer.root)
    detail = f"disk full while preprocessing step '{step.name}' into {writer.root}"
    if free is not None:
        detail += f" ({free / 1e6:.0f} MB free)"
    if need:
        detail += (f". The steps left write roughly {need / 1e6:.0f} MB of images ({n_frames} frames x "
                   f"{average / 1e3:.0f} KB x {len(folders)} folder(s): {', '.join(folders)}) plus a few MB of arrays")
    return DiskFullError(f"{detail}. Free that much space (or write the subject to another disk with -o) and run the "
                         f"same command again: finished steps are kept. ({exc})")


def preprocess(video: str | Path, out_dir: str | Path, cfg: PreprocessConfig, audio: str | Path | None = None,
               force: tuple[str, ...] = (), progress: bool = True, full_config=None, device=None,
               overwrite: bool = False) -> PreprocessReport:
    """Turn `video` (+ optional separate `audio`) into the subject directory `out_dir`; see module docstring.

    The folder must be new, empty, or a subject made from the same input with the same frame settings (see
    synctalk/data/ownership.py); `overwrite` replaces a subject made from another input (every step is redone).
    Nothing is written before these checks pass. The folder is locked while the run lasts.

    The resolved config is saved as `out_dir/config.yaml`: `full_config` (a SyncTalkConfig) when given, else
    the defaults with this `cfg` as the preprocess section. `device`: where the sync model trains and computes the
    audio features (default: the config's `device`, auto = cuda when available).
    """
    from synctalk.config import save_config
    from synctalk.data.ownership import (
        Identity,
        check_output_target,
        check_owner,
        prepare_folder,
        sweep_temporaries,
        write_manifest,
    )
    from synctalk.io.lock import FolderLock
    from synctalk.runtime import resolve_device

    start = time.perf_counter()
    unknown = [s for s in force if s not in CONTRACT_STEPS and s != "all"]
    if unknown:
        raise UserInputError(f"--force: unknown step(s) {', '.join(unknown)}; steps: {', '.join(CONTRACT_STEPS)}")
    video = Path(video)
    audio_path = Path(audio) if audio is not None else None
    root = Path(out_dir)
    check_output_target(root)
    info = probe(video)
    if not info.has_video:
        raise MediaError(f"{video}: has no video stream (is it an audio file?); give the video of the person")
    from preprocess.audio import check_lengths

    lengths = check_lengths(video, info, audio_path, cfg.fps, cfg.av_tolerance_s, cfg.trim_to_shorter)
    full_config = full_config if full_config is not None else SyncTalkConfig(preprocess=cfg)
    device = resolve_device(full_config.device) if device is None else device
    from synctalk.assets import sha256_of

    hashes = {path: sha256_of(path) for path in (video, audio_path) if path is not None}
    identity = Identity.of(video, audio_path, identity_settings(cfg, lengths.max_frames), hashes)
    check_owner(root, identity, overwrite, announce=False)  # before anything is written
    prepare_folder(root)
    with FolderLock(root, "preprocess"):
        claim = check_owner(root, identity, overwrite)  # again: another run may have finished in between
        sweep_temporaries(root)
        writer = SubjectWriter(root)
        forced = downstream(set(CONTRACT_STEPS) if "all" in force or claim == "replace" else set(force))
        _reset_unusable_steps(writer, forced)
        write_manifest(root, identity)
        save_config(full_config, writer.root)
        ctx = Context(video, audio_path, writer, cfg, info, progress, lengths.max_frames, full_config, device,
                      _hashes=hashes)
        reports = _run_steps(ctx, forced)
        meta = writer.read_meta()
        if cfg.qa:
            from preprocess.qa import write_qa

            write_qa(writer.root)
    return PreprocessReport(writer.root, meta["n_frames"], meta["fps"], reports, time.perf_counter() - start)


def _reset_unusable_steps(writer: SubjectWriter, forced: set[str]) -> None:
    """Mark not done, before any step runs: the forced steps, and the finished steps whose files are missing or
    broken (deleted by hand, a disk error...) with everything that depends on them, so that this run redoes them
    and no step meets a stale one (SubjectDataset validates every finished step it sees)."""
    from synctalk.data.subject import step_problems

    try:
        meta = writer.read_meta()
    except json.JSONDecodeError as exc:
        log.warning("%s: unreadable (%s); every step is redone", writer.meta_path, exc)
        writer.unmark_steps(CONTRACT_STEPS, reset=True)
        return
    if not meta.get("steps"):
        return
    try:
        problems = step_problems(writer.root)
    except DatasetError as exc:  # meta.json lacks its keys: nothing in it can be trusted
        log.warning("%s; every step is redone", exc)
        writer.unmark_steps(CONTRACT_STEPS)
        return
    for name, problem in problems.items():
        log.warning("step %s is redone: %s", name, re.split(r"; (?:repair it|redo it|make it) ", problem)[0])
    writer.unmark_steps(forced | downstream(set(problems)))


def _run_steps(ctx: Context, forced: set[str]) -> list[StepReport]:
    writer = ctx.writer
    reports = []
    for step in PIPELINE:
        done = writer.read_meta().get("steps", {})
        if step.run is None:
            reports.append(StepReport(step.name, "not built yet", stats={"next": step.pending_note}))
            continue
        sig = signature(step, ctx, done)
        previous = done.get(step.name, {})
        if step.name not in forced and previous.get("done") and previous.get("signature") == sig:
            reports.append(StepReport(step.name, "up to date", previous.get("seconds", 0.0), previous))
            continue
        # Every step downstream reruns too (the run id it depends on changes): mark them not done now, so that no
        # step of this run validates their old files against the new ones.
        writer.unmark_steps(downstream({step.name}))
        log.info("step %s ...", step.name)
        t0 = time.perf_counter()
        try:
            stats = step.run(ctx)
        except DiskFullError as exc:
            raise _disk_full(step, ctx, exc) from exc
        seconds = round(time.perf_counter() - t0, 3)
        writer.mark_step(step.name, signature=sig, run_id=uuid.uuid4().hex[:12], seconds=seconds, **stats)
        reports.append(StepReport(step.name, "ran", seconds, stats))
    return reports
