"""`synctalk evaluate WORKSPACE -o REPORT/`: the papers' metric suite in one command.

Self-driven (default): every frame of a held-out split is rendered from its own pose, audio and expression and
compared with the real frame (with ``portrait``: pasted back and compared with the original full-resolution
frame). Rows of the table:

- ``render``: PSNR, SSIM, MS-SSIM, LPIPS (AlexNet, v0.1) of the whole frame and of the face box (the square around
  the subject's tracked landmarks, 10 % margin), LMD (mouth landmarks, mean-centred, pixels at the evaluation
  resolution), blendshape error of the upper and lower face (our stand-in for AUE), LSE-D / LSE-C / offset from the
  sync judge; FID is not computed yet and is listed as skipped, and LPIPS is skipped (with what to do) when
  ``lpips_alex.pt`` is not in the model cache;
- ``ground truth``: the real frames scored the same way (LSE-D / LSE-C / offset; LPIPS of the frames against
  themselves, 0, as the papers' GT rows show it), so every table has its GT row.

With ``audio``: the avatar renders that speech (`synctalk render`) and the lip-sync metrics are computed on it;
the GT row is still the held-out split with its own audio.

With ``size`` (``--size N``): rendered and scored at N x N instead of the subject's frame size, the real frames
resized to N with area interpolation (a quick look at a 512 px subject on a CPU); the size is in ``metrics.json``
and :func:`compare` warns when two reports were made at different sizes. With ``portrait`` the N px renders are
pasted back and scored at the original resolution as usual.

The judge is the subject's ``sync.pt`` (trained during preprocessing on frames *before* the validation tail, so it
never saw the frames it judges) unless ``sync_model`` is given; the official SyncNet is added when
``syncnet_v2.model`` is in the asset cache. A metric that cannot be computed is listed under ``skipped`` with the
reason, never given a made-up value; a metric that fails on these frames (the judge finds no face in the render) is
skipped with the reason and the rest is still written. Speed: training wall time (train_log.json), rendering FPS,
peak memory.

Inputs (workspace, split, ``max_frames``, ``size``, ``audio``) are checked, and the report folder is checked to be
writable and new, empty or a report made before (finished, or interrupted: it holds the mark evaluate writes
first), before any rendering; a run that fails leaves no empty report folder behind.

Outputs: ``metrics.json`` (values, skipped reasons, provenance: config, dataset hash, code version, hardware),
``metrics.md`` (the table) and ``sheet.png`` (GT | render | error map for a few frames).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synctalk.errors import UserInputError
from synctalk.models.mouth import DEFAULT_GAIN

log = logging.getLogger("synctalk.eval")

IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "lpips_face", "lmd", "au_upper", "au_lower", "fid")
SYNC_METRICS = ("lse_d", "lse_c", "offset")
LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "ms_ssim": "MS-SSIM ↑", "lpips": "LPIPS ↓",
          "lpips_face": "LPIPS face ↓", "lmd": "LMD ↓",
          "au_upper": "AUE-upper* ↓", "au_lower": "AUE-lower* ↓", "fid": "FID ↓", "lse_d": "LSE-D ↓",
          "lse_c": "LSE-C ↑", "offset": "offset", "syncnet_lse_d": "SyncNet LSE-D ↓",
          "syncnet_lse_c": "SyncNet LSE-C ↑"}


@dataclass
class EvaluateOptions:
    split: str = "val"
    audio: Path | None = None        # novel speech: lip-sync metrics of its render
    portrait: bool = False           # paste back and compare at the original resolution
    max_frames: int | None = None    # evaluate the first N frames of the split (quick runs; None: all)
    sync_model: Path | None = None   # the judge (default: SUBJECT/sync.pt)
    max_offset: int = 15
    sheet_frames: int = 4
    silent: bool = False             # drive the frames with silent-audio features (the LMD control)
    mouth_gain: float = DEFAULT_GAIN  # as in RenderOptions
    size: int | None = None          # render and score at size x size (default: the subject's frame size)


def _sync_row(video: Path, audio: Path | None, judge, max_offset: int) -> dict:
    from synctalk.audio.score import sync_score

    score = sync_score(video, audio, model=judge, max_offset=max_offset)
    return {"lse_d": float(score.lse_d), "lse_c": float(score.lse_c), "offset": int(score.offset)}


def _write_clip(path: Path, frames: list[np.ndarray], fps: float, audio: np.ndarray) -> Path:
    from synctalk.io.media import VideoWriter, write_wav

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, audio, 16000)
        with VideoWriter(path, fps, audio_path=wav) as writer:
            writer.write_all(frames)
    return path


def _judges(avatar, options: EvaluateOptions, device) -> tuple[dict, dict]:
    """{"": our judge, "syncnet_": the official one when present}, and skipped reasons."""
    from synctalk.assets import cache_dir
    from synctalk.audio.score import load_judge

    judges, skipped = {}, {}
    ours = options.sync_model or avatar.ds.root / "sync.pt"
    if Path(ours).is_file():
        judges[""] = load_judge(ours, device)
    else:
        root = avatar.ds.root
        skipped["lse"] = (f"no sync judge: {ours} is missing (the subject's audio backend needs none). Train one "
                          f"with `synctalk sync-train {root} --before-validation -o {root / 'sync.pt'}`, or pass "
                          "--sync-model from `synctalk sync-train` on other footage")
    official = cache_dir() / "syncnet_v2.model"
    if official.is_file():
        judges["syncnet_"] = load_judge(official, device)
    else:
        skipped["syncnet"] = f"official SyncNet scores need {official} (syncnet_v2.model); not in the cache"
    return judges, skipped


def dataset_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for name in ("meta.json", "splits.json", "poses.npy", "audio_features.npy"):
        path = Path(root) / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The synctalk version and git commit of the code this process runs (read once: a long ablation keeps the
    commit it started with even if the checkout moves on)."""
    import subprocess

    import synctalk

    repo = Path(synctalk.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{synctalk.__version__}+{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return synctalk.__version__


def hardware() -> dict:
    import os

    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def render_split(avatar, frames: list[int], portrait=None, progress: bool = False, features=None, raw=None,
                 size: int | None = None) -> tuple[list[np.ndarray], float]:
    """Self-driven renders (uint8, ``size`` pixels square, default the subject's) of subject frames (audio:
    ``features`` [N, ...] of the whole clip, default the subject's own), and the rendering frames/s. With
    ``portrait``, the renders before paste-back are appended to the list ``raw`` when given."""
    from synctalk.models.frame import FrameInputs
    from synctalk.progress import Progress

    out, seconds = [], 0.0
    features = avatar.subject.features if features is None else features
    shapes = avatar.mouth_shapes(features, frames)
    bar = Progress("evaluate: render", frames, unit="frame", enabled=progress, leave=False)
    for j, frame in enumerate(bar):
        start = time.perf_counter()
        s = avatar.subject
        inputs = FrameInputs(c2w=s.poses[frame], audio_code=avatar.audio_codes(features, [frame])[0],
                             expression=s.expressions[frame], torso_pose=s.pose_vectors[frame],
                             torso_track=s.torso_tracks[frame], appearance_frame=frame)
        rgb = avatar.render(inputs, frame, size, mouth_shapes=None if shapes is None else shapes[j]).rgb
        image = (rgb.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        out.append(portrait(image, frame) if portrait is not None else image)
        if raw is not None:
            raw.append(image)
        seconds += time.perf_counter() - start
    return out, len(frames) / max(seconds, 1e-9)


def check_size(size: int | None) -> int | None:
    """``size`` as given to ``--size`` (None: the subject's), refused unless a positive whole number."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise UserInputError(f"the evaluation size must be a positive whole number of pixels, got {size!r}; "
                             "give e.g. --size 128, or leave it out to evaluate at the subject's frame size")
    return int(size)


def resized(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` at ``size`` x ``size`` (area interpolation, as the renders' background plate); unchanged when
    ``size`` is None or already its size."""
    if size is None or image.shape[:2] == (size, size):
        return image
    import cv2

    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def image_metrics(preds: list[np.ndarray], gts: list[np.ndarray], fps: float) -> tuple[dict, dict]:
    """Mean per-frame image metrics, landmark and blendshape errors; and skipped reasons."""
    from synctalk.data.contract import BLENDSHAPE_NAMES
    from synctalk.eval import metrics as M

    per_frame = {name: [fn(p, g) for p, g in zip(preds, gts, strict=True)]
                 for name, fn in (("psnr", M.psnr), ("ssim", M.ssim), ("ms_ssim", M.ms_ssim))}
    values = {name: float(np.mean(v)) for name, v in per_frame.items()}
    values["per_frame"] = {name: [round(x, 4) for x in v] for name, v in per_frame.items()}
    skipped = {}
    fid = M.fid_metric()
    if isinstance(fid, M.Skipped):
        skipped["fid"] = fid.reason
    else:
        values["fid"] = float(fid(preds, gts))
    pred_lm, pred_found, pred_bs = M.landmarks_of_frames(preds, fps)
    gt_lm, gt_found, gt_bs = M.landmarks_of_frames(gts, fps)
    both = pred_found & gt_found
    values["face_found"] = float(pred_found.mean())
    if both.any():
        values["lmd"] = M.lmd(pred_lm, gt_lm, valid=both)
        errors = M.blendshape_error(pred_bs[both], gt_bs[both], BLENDSHAPE_NAMES)
        values["au_upper"], values["au_lower"] = errors["upper_face"], errors["lower_face"]
    else:
        skipped["lmd"] = skipped["au_upper"] = skipped["au_lower"] = "no face found in the renders"
    return values, skipped


def face_boxes(avatar, frames: list[int], shape: tuple[int, int], portrait=None) -> list | None:
    """Per frame, the face box (:func:`synctalk.eval.metrics.face_box`) in the scored frames of ``shape`` (H, W)
    from the subject's tracked landmarks (None for a frame without a face); None when the subject has none."""
    from synctalk.errors import SyncTalkError
    from synctalk.eval.metrics import face_box

    ds = avatar.ds
    try:
        landmarks, flags = ds.landmarks, ds.face_flags
    except (SyncTalkError, OSError, ValueError):
        return None
    boxes = []
    for frame in frames:
        if not flags[frame]:
            boxes.append(None)
            continue
        xy = np.asarray(landmarks[frame][:, :2], np.float64)
        if portrait is not None:   # crop pixels of a ds.width frame → pixels of the original frame
            xy = xy * portrait.crop.side / ds.width + (portrait.crop.x0, portrait.crop.y0)
        else:
            xy = xy * (shape[1] / ds.width, shape[0] / ds.height)
        boxes.append(face_box(xy, shape))
    return boxes


def lpips_rows(preds: list[np.ndarray], gts: list[np.ndarray], boxes: list | None,
               device: str | torch.device = "cpu") -> tuple[dict, dict, dict, dict]:
    """LPIPS of the whole frames and of the face boxes: (render values, ground-truth row values, per-frame
    render values, skipped reasons). The ground-truth row scores the real frames against themselves."""
    from synctalk.eval import metrics as M

    score = M.lpips_metric(device=device)
    if isinstance(score, M.Skipped):
        return {}, {}, {}, {"lpips": score.reason, "lpips_face": score.reason}
    values, truth, per_frame, skipped = {}, {}, {}, {}
    height, width = preds[0].shape[:2]
    need = score.min_side
    if min(height, width) < need:
        skipped["lpips"] = skipped["lpips_face"] = (
            f"LPIPS skipped: the scored frames are {width}x{height}, smaller than the {need} px LPIPS (AlexNet) "
            f"needs; evaluate with --size {need} or more")
        return values, truth, per_frame, skipped
    per_frame["lpips"] = [score(p, g) for p, g in zip(preds, gts, strict=True)]
    values["lpips"] = float(np.mean(per_frame["lpips"]))
    truth["lpips"] = 0.0   # the real frames against themselves
    if boxes is None or not any(b is not None for b in boxes):
        skipped["lpips_face"] = ("LPIPS face skipped: no frame of the split has a tracked face (the subject's "
                                 "landmarks.npy / face_flags.npy)")
        return values, truth, per_frame, skipped
    pairs = [(p[b], g[b]) for p, g, b in zip(preds, gts, boxes, strict=True)
             if b is not None and b[0].stop - b[0].start >= need]
    if not pairs:
        skipped["lpips_face"] = (f"LPIPS face skipped: the face boxes are smaller than the {need} px LPIPS "
                                 f"(AlexNet) needs at {width}x{height}; evaluate with a larger --size")
        return values, truth, per_frame, skipped
    values["lpips_face"] = float(np.mean([score(p, g) for p, g in pairs]))
    truth["lpips_face"] = 0.0
    if len(pairs) < len(preds):
        values["lpips_face_frames"] = len(pairs)
    return values, truth, per_frame, skipped


def check_max_frames(max_frames: int | None) -> int | None:
    """``max_frames`` as given to ``--max-frames`` (None: every frame of the split), refused unless positive."""
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise UserInputError(f"--max-frames must be a positive whole number of frames, got {max_frames!r} (0 "
                             "would evaluate nothing); give 1 or more, or leave --max-frames out to evaluate every "
                             "frame of the split")
    return int(max_frames)


def crop_psnr(pasted: list[np.ndarray], plain: list[np.ndarray], originals: list[np.ndarray], crop) -> dict:
    """Mean PSNR inside the preprocessing crop of the original frames: the paste-back against the plain render
    upsampled to the crop (bicubic)."""
    import cv2

    from synctalk.eval.metrics import psnr

    inside = (slice(max(crop.y0, 0), crop.y0 + crop.side), slice(max(crop.x0, 0), crop.x0 + crop.side))
    scores = {"psnr_crop_portrait": [], "psnr_crop_plain": []}
    for p, r, o in zip(pasted, plain, originals, strict=True):
        target = o[inside]
        up = cv2.resize(r, (crop.side, crop.side), interpolation=cv2.INTER_CUBIC)
        up = up[inside[0].start - crop.y0:, inside[1].start - crop.x0:][:target.shape[0], :target.shape[1]]
        scores["psnr_crop_portrait"].append(psnr(p[inside], target))
        scores["psnr_crop_plain"].append(psnr(up, target))
    return {name: float(np.mean(v)) for name, v in scores.items()}


def error_sheet(preds: list[np.ndarray], gts: list[np.ndarray], n: int) -> np.ndarray:
    """GT | render | error map (inferno, |difference| x 4) rows for ``n`` evenly spaced frames."""
    from matplotlib import colormaps

    picks = np.linspace(0, len(preds) - 1, min(n, len(preds))).round().astype(int)
    rows = []
    for k in picks:
        err = np.abs(preds[k].astype(np.float32) - gts[k].astype(np.float32)).mean(-1) / 255 * 4
        heat = (colormaps["inferno"](np.clip(err, 0, 1))[..., :3] * 255).astype(np.uint8)
        rows.append(np.concatenate([gts[k], preds[k], heat], 1))
    return np.concatenate(rows, 0)


def evaluate(workspace: str | Path, out_dir: str | Path, options: EvaluateOptions | None = None,
             device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Evaluate a trained workspace (see the module docstring); returns what metrics.json holds."""
    from synctalk.inference.avatar import Avatar
    from synctalk.io.outputs import check_output_dir

    options = options or EvaluateOptions()
    size = check_size(options.size)
    max_frames = check_max_frames(options.max_frames)
    out_dir = Path(out_dir)
    if options.audio is not None and not Path(options.audio).is_file():
        from synctalk.errors import MediaError

        raise MediaError(f"{options.audio}: no such audio file; give --audio an existing speech file (WAV, MP3, "
                         "FLAC...) or leave it out to score the held-out frames with their own audio")
    avatar = Avatar.load(workspace, device)
    avatar.mouth_gain = options.mouth_gain
    frames = avatar.ds.split(options.split)
    if not frames:
        raise UserInputError(f"{avatar.ds.root}: the split '{options.split}' is empty; preprocess with "
                             "preprocess.val_fraction > 0 or pick --split train")
    frames = frames[:max_frames] if max_frames else frames
    check_output_dir(out_dir, "report folder", "-o", ours=is_report_folder)
    created = [p for p in (out_dir.absolute(), *out_dir.absolute().parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_MARK).touch()
    try:
        return _evaluate(workspace, avatar, frames, out_dir, options, size, device, progress)
    except BaseException:
        if out_dir.absolute() in created and [p.name for p in out_dir.iterdir()] == [REPORT_MARK]:
            (out_dir / REPORT_MARK).unlink()
        for folder in created:   # a failed run leaves no empty report folder behind
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
        raise


def _evaluate(workspace, avatar, frames: list[int], out_dir: Path, options: EvaluateOptions, size: int | None,
              device, progress: bool) -> dict:
    from synctalk.errors import SyncTalkError
    from synctalk.io.atomic import atomic_write_json, atomic_write_text
    from synctalk.io.images import write_image

    if size is not None and size > max(avatar.ds.width, avatar.ds.height):
        log.warning("evaluating at %d px, larger than the subject's %dx%d frames: the ground truth is upsampled",
                    size, avatar.ds.width, avatar.ds.height)
    portrait = None
    if options.portrait:
        from synctalk.inference.video import PortraitCompositor, RenderOptions

        portrait = PortraitCompositor(avatar, RenderOptions(portrait=True))
    audio = avatar.ds.audio()
    features = avatar.audio_features(np.zeros_like(audio), len(avatar.ds)) if options.silent else None
    plain: list[np.ndarray] = []
    preds, render_fps = render_split(avatar, frames, portrait, progress, features, plain, size)
    # the truth at the renders' size (with portrait: the original frames, which the renders are pasted into)
    gts = [portrait.source[f] if portrait is not None else resized(avatar.ds.image(f), size) for f in frames]
    render, skipped = image_metrics(preds, gts, avatar.fps)
    per_frame = render.pop("per_frame")
    lpips_render, lpips_truth, lpips_frames, lpips_skipped = lpips_rows(
        preds, gts, face_boxes(avatar, frames, preds[0].shape[:2], portrait), device)
    render.update(lpips_render)
    per_frame.update({name: [round(x, 4) for x in v] for name, v in lpips_frames.items()})
    skipped.update(lpips_skipped)
    if portrait is not None:  # the same frames without paste-back, upsampled to the crop, for comparison
        render.update(crop_psnr(preds, plain, gts, portrait.crop))
    render["render_fps"] = render_fps
    gt_row: dict = dict(lpips_truth)

    judges, judge_skips = _judges(avatar, options, device)
    skipped.update(judge_skips)
    spf = 16000 / avatar.fps
    segment = np.concatenate([audio[int(round(f * spf)):int(round((f + 1) * spf))] for f in frames])
    with tempfile.TemporaryDirectory() as tmp:
        gt_video = _write_clip(Path(tmp) / "gt.mp4", gts, avatar.fps, segment)
        if options.audio is not None:
            from synctalk.inference.video import RenderOptions, render_video

            report = render_video(workspace, options.audio, out_dir / "render.mp4",
                                  RenderOptions(portrait=options.portrait, size=size), device=device,
                                  progress=progress)
            scored, scored_audio = report.video, None
            render["novel_render_fps"] = report.render_fps
        else:
            scored, scored_audio = _write_clip(out_dir / "render.mp4", preds, avatar.fps, segment), None
        for prefix, judge in judges.items():
            for row_name, row, video in (("render", render, scored), ("ground truth", gt_row, gt_video)):
                try:
                    scores = _sync_row(video, scored_audio, judge, options.max_offset)
                except SyncTalkError as exc:  # e.g. no face in the render: keep every other metric
                    skipped[f"{prefix}lse ({row_name})"] = (f"{'SyncNet ' if prefix else ''}LSE-D / LSE-C / offset "
                                                             f"of the {row_name} frames skipped: {exc}")
                    log.warning("evaluate: %s", skipped[f"{prefix}lse ({row_name})"])
                    continue
                for name, value in scores.items():
                    row[prefix + name] = value
    state = json.loads((Path(workspace) / "train_log.json").read_text())
    train_seconds = sum(float(s.get("seconds", 0)) for s in state["stages"].values())
    sheet = error_sheet(preds, gts, options.sheet_frames)
    write_image(out_dir / "sheet.png", sheet)
    result = {
        "workspace": str(Path(workspace).resolve()), "subject": str(avatar.ds.root), "split": options.split,
        "frames": len(frames), "resolution": [int(preds[0].shape[1]), int(preds[0].shape[0])],
        "size": int(plain[0].shape[0]),  # the render side (--size; the subject's by default)
        "portrait": options.portrait, "audio": str(options.audio) if options.audio else None,
        "silent": options.silent,
        "rows": {"render": render, "ground truth": gt_row},
        "per_frame": {"frames": list(map(int, frames)), **per_frame},
        "speed": {"train_minutes": round(train_seconds / 60, 2), "render_fps": round(render_fps, 3),
                  "peak_memory_mb": round(peak_memory_mb(device), 1)},
        "skipped": skipped,
        "provenance": {"config": json.loads(json.dumps(_config_dict(avatar.cfg))),
                       "dataset_hash": dataset_hash(avatar.ds.root), "code_version": code_version(),
                       "hardware": hardware(), "date": time.strftime("%Y-%m-%d %H:%M:%S")},
    }
    atomic_write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "metrics.md", metrics_markdown(result))
    return result


def _config_dict(cfg) -> dict:
    from synctalk.config import config_to_dict

    return config_to_dict(cfg)


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return "inf" if math.isinf(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"


def metrics_markdown(result: dict) -> str:
    rows = result["rows"]
    columns = [m for m in (*IMAGE_METRICS, *SYNC_METRICS, "syncnet_lse_d", "syncnet_lse_c")
               if any(m in r for r in rows.values()) or m in result["skipped"]]
    lines = [f"# Evaluation of {result['workspace']}", "",
             f"{result['frames']} frames of the '{result['split']}' split at {result['resolution'][0]}x"
             f"{result['resolution'][1]}"
             + (f" (portrait paste-back of {result['size']} px renders)" if result["portrait"] and "size" in result
                else " (portrait paste-back)" if result["portrait"] else "")
             + (f"; lip sync of the render of {result['audio']}" if result["audio"] else "")
             + ("; driven by silent-audio features (control)" if result.get("silent") else ""), "",
             "| | " + " | ".join(LABELS.get(c, c) for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    speed = result["speed"]
    lines += ["", "*AUE stand-in: mean absolute error of MediaPipe blendshape scores (upper face: brows and eyes; "
              "lower face: jaw, mouth, cheeks), named as such because it is not the action-unit error of OpenFace.",
              "", f"Speed: training {speed['train_minutes']} min, rendering {speed['render_fps']} frames/s, peak "
              f"memory {speed['peak_memory_mb']} MB.", ""]
    if result["skipped"]:
        lines += ["Skipped:"] + [f"- {name}: {reason}" for name, reason in result["skipped"].items()] + [""]
    prov = result["provenance"]
    lines += [f"Code {prov['code_version']}, dataset hash {prov['dataset_hash']}, hardware "
              f"{json.dumps(prov['hardware'])}, {prov['date']}.", ""]
    return "\n".join(lines)


def _scale(report: dict) -> str:
    """How big a report's frames were: the render side and, when different (portrait), the scored frames."""
    width, height = report.get("resolution", ["?", "?"])
    size = report.get("size")
    if size is None or [size, size] == [width, height]:
        return f"{width}x{height}"
    return f"{size} px renders scored at {width}x{height}"


REPORT_MARK = ".synctalk-report"   # written before anything else, so an interrupted report is recognised too


def is_report_folder(folder: Path) -> bool:
    """A report made before (finished or interrupted)."""
    return (Path(folder) / "metrics.json").is_file() or (Path(folder) / REPORT_MARK).is_file()


def compare(a: str | Path, b: str | Path) -> str:
    """A diff table of two reports (metrics.json files or folders holding one)."""
    def load(path):
        path = Path(path)
        path = path / "metrics.json" if path.is_dir() else path
        if not path.is_file():
            raise UserInputError(f"{path}: no metrics.json; write one with `synctalk evaluate WORKSPACE -o "
                                 f"{path.parent if path.name == 'metrics.json' else path}` first")
        return json.loads(path.read_text())

    first, second = load(a), load(b)
    lines = ["| metric | A | B | B − A |", "|---|---:|---:|---:|"]
    for row in ("render", "ground truth"):
        ra, rb = first["rows"].get(row, {}), second["rows"].get(row, {})
        for key in [k for k in ra if k in rb or k in ra] + [k for k in rb if k not in ra]:
            va, vb = ra.get(key), rb.get(key)
            diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            lines.append(f"| {row}: {LABELS.get(key, key)} | {_fmt(va)} | {_fmt(vb)} | {_fmt(diff)} |")
    for key in first["speed"]:
        va, vb = first["speed"][key], second["speed"].get(key)
        lines.append(f"| {key} | {_fmt(va)} | {_fmt(vb)} | {_fmt(vb - va if vb is not None else None)} |")
    notes = []
    scale_a, scale_b = _scale(first), _scale(second)
    if scale_a != scale_b:
        warning = (f"the reports were made at different sizes ({scale_a} vs {scale_b}): PSNR, SSIM, MS-SSIM, LMD "
                   "and the frame rate depend on the size and are not comparable; evaluate both with the same "
                   "--size")
        log.warning(warning)
        notes.append("WARNING: " + warning)
    for key in ("dataset_hash", "code_version"):
        if first["provenance"][key] != second["provenance"][key]:
            notes.append(f"{key} differs: {first['provenance'][key]} vs {second['provenance'][key]}")
    return "\n".join(lines + ([""] + notes if notes else []))
