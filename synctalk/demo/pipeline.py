"""The demo pipeline: make the sample clip, then run every pipeline stage that exists on it.

Stages not built yet are listed as next steps; each later stage replaces its `None` below with the
function that runs it on the demo's output folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synctalk.config import SyncTalkConfig, save_config
from synctalk.errors import SyncTalkError
from synctalk.io.atomic import atomic_path, atomic_write_json

log = logging.getLogger("synctalk.demo")

SAMPLE_VIDEO = "sample.mp4"


@dataclass
class DemoReport:
    out_dir: Path
    video: Path | None = None                               # the newest video the demo produced
    stages_run: list[str] = field(default_factory=list)
    stages_next: list[str] = field(default_factory=list)
    stages_blocked: list[str] = field(default_factory=list)   # built, but a model file is missing
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def stage_sample(cfg: SyncTalkConfig, report: DemoReport) -> None:
    """Generate the sample clip, write it, and check it reads back through synctalk.io."""
    from synctalk.demo.sample import make_sample_clip, write_sample_clip
    from synctalk.io.media import load_audio, probe, read_frames

    clip = make_sample_clip(seconds=cfg.demo.seconds, size=cfg.demo.size, fps=cfg.demo.fps, seed=cfg.seed,
                            progress=True)
    video = write_sample_clip(clip, report.out_dir / SAMPLE_VIDEO)
    info = probe(video)
    n_read = sum(1 for _ in read_frames(video, fps=cfg.demo.fps, info=info))
    audio = load_audio(video, cfg.preprocess.sample_rate_hz, start_s=info.video_start_s)
    if n_read != len(clip.frames) or abs(len(audio) / cfg.preprocess.sample_rate_hz - n_read / clip.fps) > 0.1:
        raise SyncTalkError(f"{video}: wrote {len(clip.frames)} frames and {len(clip.audio)} audio samples but "
                            f"read back {n_read} frames and {len(audio)} samples (ffmpeg problem?)")
    truth = report.out_dir / "sample_truth.json"
    atomic_write_json(truth, {"fps": clip.fps, "mouth_open": clip.mouth_open.round(4).tolist(),
                              "head_roll_deg": clip.head_roll_deg.round(3).tolist(),
                              "head_shift_px": clip.head_shift_px.round(3).tolist(), **clip.notes})
    sheet = save_sample_sheet(clip, report.out_dir / "sample_sheet.png")
    report.video = video
    report.files.update(sample_video=video, sample_truth=truth, sample_sheet=sheet)
    log.info("sample clip: %d frames %dx%d @ %g fps with %.1f s of speech -> %s", n_read, info.width,
             info.height, info.fps, len(audio) / cfg.preprocess.sample_rate_hz, video)


def save_sample_sheet(clip, path: Path, n_shown: int = 6) -> Path:
    """Contact sheet: frames spread over the clip, above the mouth-opening curve and the audio waveform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clip.frames)
    picks = np.linspace(0, n - 1, n_shown).round().astype(int)
    fig = plt.figure(figsize=(2 * n_shown, 4.6))
    grid = fig.add_gridspec(2, n_shown, height_ratios=[2, 1.3])
    for k, i in enumerate(picks):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(clip.frames[i])
        ax.set_title(f"frame {i}  open {clip.mouth_open[i]:.2f}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    t_audio = np.arange(len(clip.audio)) / clip.sample_rate_hz
    ax.plot(t_audio, clip.audio, color="0.75", lw=0.4, label="audio")
    ax.plot(np.arange(n) / clip.fps, clip.mouth_open, color="C3", lw=1.5, label="mouth openness")
    ax.vlines(picks / clip.fps, -1, 1, colors="C0", lw=0.6, linestyles=":")
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, n / clip.fps)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def stage_preprocess(cfg: SyncTalkConfig, report: DemoReport) -> None:
    """sample.mp4 → demo_out/subject with the real preprocessing pipeline."""
    from preprocess.run import preprocess

    # The demo writes its own sample clip into its folder again on every run; a subject made from an earlier clip
    # (other demo.seconds, seed...) is replaced rather than refused.
    result = preprocess(report.out_dir / SAMPLE_VIDEO, report.out_dir / "subject", cfg.preprocess, full_config=cfg,
                        overwrite=True)
    report.files.update(subject=result.root, qa_sheet=result.root / "qa" / "sheet.png")
    pending = [s.name for s in result.steps if s.status == "not built yet"]
    log.info("subject: %d frames -> %s%s", result.n_frames, result.root,
             f" (steps not built yet: {', '.join(pending)})" if pending else "")


def stage_train(cfg: SyncTalkConfig, report: DemoReport) -> None:
    """demo_out/subject → demo_out/workspace with `synctalk train` (configs/demo.yaml sizes)."""
    from synctalk.runtime import resolve_device
    from synctalk.train.trainer import train

    result = train(report.out_dir / "subject", report.out_dir / "workspace", cfg, device=resolve_device(cfg.device))
    report.files.update(workspace=result.workspace)
    for line in result.lines():
        log.info("train %s", line)


def stage_render(cfg: SyncTalkConfig, report: DemoReport) -> None:
    """workspace + new speech (synthesised with another seed) → demo_out/render.mp4 (and a portrait paste-back)."""
    import numpy as np

    from synctalk.demo.sample import synthesize_speech
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.media import write_wav
    from synctalk.runtime import resolve_device

    speech, _ = synthesize_speech(cfg.demo.seconds / 2, np.random.default_rng(cfg.seed + 1))
    audio = report.out_dir / "new_speech.wav"
    write_wav(audio, speech, cfg.preprocess.sample_rate_hz)
    device = resolve_device(cfg.device)
    size = cfg.demo.render_size or None
    plain = report.out_dir / "render.mp4"
    portrait = render_video(report.out_dir / "workspace", audio, report.out_dir / "render_portrait.mp4",
                            RenderOptions(portrait=True, plain_video=plain, size=size), device=device)
    report.video = plain
    report.files.update(new_speech=audio, render=plain, render_portrait=portrait.video)
    log.info("render: %d frames at %.2f frames/s -> %s (portrait paste-back: %s)", portrait.n_frames,
             portrait.render_fps, plain, portrait.video)


def models_missing() -> str | None:
    """Why the stages after `sample` cannot run here (a model file that cannot be had), or None."""
    from synctalk import assets
    from synctalk.errors import AssetError

    try:
        assets.fetch("face_landmarker")
    except AssetError as exc:
        return str(exc)
    return None


# (name, function or None while not built yet, what it will do)
DEMO_STAGES: list[tuple[str, Callable[[SyncTalkConfig, DemoReport], None] | None, str]] = [
    ("sample", stage_sample, "make the built-in talking clip"),
    ("preprocess", stage_preprocess, "sample.mp4 -> subject dataset (frames, landmarks, masks, poses, audio features)"),
    ("train", stage_train, "subject -> head and torso model (configs/demo.yaml)"),
    ("render", stage_render, "model + new audio -> talking video (render.mp4, render_portrait.mp4)"),
]


def run_demo(cfg: SyncTalkConfig, out_dir: str | Path) -> DemoReport:
    """Run every available stage in order; returns what ran, what is next, and where the outputs are."""
    from synctalk.io.outputs import check_output_dir, written_config

    report = DemoReport(out_dir=Path(out_dir))
    check_output_dir(report.out_dir, "demo folder", "-o",
                     ours=lambda folder: written_config(folder) or (folder / "demo_report.json").is_file())
    report.out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, report.out_dir)
    blocked = None
    for name, run, what in DEMO_STAGES:
        if run is None:
            report.stages_next.append(f"{name}: {what}")
            continue
        if name != "sample" and blocked is None:
            blocked = models_missing() or ""
        if blocked:
            report.stages_blocked.append(name)
            continue
        start = time.perf_counter()
        run(cfg, report)
        report.seconds[name] = time.perf_counter() - start
        report.stages_run.append(name)
    if report.stages_blocked:
        log.warning("stages %s skipped: %s", ", ".join(report.stages_blocked), blocked)
    atomic_write_json(report.out_dir / "demo_report.json", {
        "stages_run": report.stages_run, "stages_blocked": report.stages_blocked,
        "stages_next": report.stages_next, "seconds": report.seconds,
        "files": {k: str(v) for k, v in report.files.items()}})
    return report
