"""`synctalk audio-inspect FILE`: see what a driving track says before rendering with it."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, existing_dir, positive_float


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audio-inspect", help="plot a driving track's waveform, visemes and predicted mouth opening (PNG)",
        description="Decodes the audio's phones offline (pocketsphinx), and draws the waveform with loudness and "
                    "voicing, the visemes over time and the mouth opening they ask for; with -w, also the jawOpen "
                    "the workspace's own audio path predicts.")
    parser.add_argument("audio", type=Path, help="speech to check (wav, flac, mp3, m4a, a video, ...)")
    parser.add_argument("-o", "--output", type=Path, help="PNG to write (default: AUDIO with .png beside it)")
    parser.add_argument("-w", "--workspace", type=existing_dir, help="also plot this workspace's predicted jawOpen")
    parser.add_argument("--fps", type=positive_float, default=25.0, help="frame rate of the timeline (default 25)")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import compute_device, resolve_config
    from synctalk.inference.audio_inspect import inspect_audio
    from synctalk.io.outputs import check_output_file

    output = check_output_file(args.output or args.audio.with_suffix(".png"), "plot", suffixes=(".png",),
                               inputs=[args.audio])
    device = compute_device(resolve_config(args)) if args.workspace else "cpu"
    report = inspect_audio(args.audio, output, fps=args.fps, workspace=args.workspace, device=device)
    print("\n".join(report.lines()))
    return 0
