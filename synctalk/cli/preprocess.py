"""`synctalk preprocess VIDEO -o SUBJECT`: video → subject directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess", help="turn a video of one person talking into a subject directory",
        description="Crop, landmarks + blendshapes, parsing masks, background and torso plates, splits and QA "
                    "sheets (docs/dataset.md). Resumable: finished steps are skipped while their inputs are "
                    "unchanged.")
    parser.add_argument("video", type=Path, help="input video (any container, fps, size)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="subject directory to write")
    parser.add_argument("--audio", type=Path, help="the speech, when the video has no audio track (or a better "
                                                   "recording that starts with the video)")
    parser.add_argument("--force", action="append", default=[], metavar="STEP",
                        help="rerun STEP (and what depends on it) even if up to date; repeatable; 'all' for all")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the subject in OUTPUT when it was made from another video, audio or frame "
                             "settings (fps, size, crop); without it such a run is refused and nothing is changed")
    parser.add_argument("--workers", type=int, help="worker threads for per-frame steps (preprocess.workers)")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from preprocess.run import preprocess
    from synctalk.cli.common import compute_device, resolve_config, verbosity

    if args.workers is not None:
        args.overrides.append(f"preprocess.workers={args.workers}")
    cfg = resolve_config(args)
    device = compute_device(cfg)
    report = preprocess(args.video, args.output, cfg.preprocess, audio=args.audio, force=tuple(args.force),
                        overwrite=args.overwrite, progress=verbosity(args) >= 0, full_config=cfg, device=device)
    print_summary(report)
    return 0


def print_summary(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="synctalk preprocess")
    for column in ("step", "status", "seconds", "frames/s", "notes"):
        table.add_column(column, justify="right" if column in ("seconds", "frames/s") else "left")
    for step in report.steps:
        fps = f"{report.n_frames / step.seconds:.1f}" if step.status == "ran" and step.seconds > 0 else ""
        notes = ", ".join(f"{k}={v}" for k, v in step.stats.items()
                          if k in ("faces_detected_fraction", "interpolated", "excluded", "train", "val", "next",
                                   "background_seen_fraction", "rms_dbfs", "shift_std_px", "interpolated_frames")
                          and v not in ("", None))
        table.add_row(step.name, step.status, f"{step.seconds:.1f}" if step.seconds else "", fps, notes)
    console = Console()
    console.print(table)
    print(f"{report.root}: {report.n_frames} frames @ {report.fps:g} fps, total {report.seconds:.1f} s; "
          f"QA pictures in {report.root / 'qa'}")
