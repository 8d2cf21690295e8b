"""`synctalk render WORKSPACE --audio FILE -o out.mp4`: the trained person saying new audio."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, nonnegative_int, positive_float, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render a trained avatar speaking new audio into an mp4",
        description="Any audio format ffmpeg reads; the mp4 has the subject's fps, the audio muxed in and "
                    "round(duration * fps) frames. --portrait pastes the face back into the original footage.")
    parser.add_argument("workspace", type=Path, help="workspace from `synctalk train`")
    parser.add_argument("--audio", type=Path, required=True, help="speech to render (wav, flac, mp3, m4a, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    parser.add_argument("--pose", choices=("train", "still", "smooth"), default="train",
                        help="head motion: replay the training frames back and forth (train), one frame (still), "
                             "or a smoothed replay (smooth)")
    parser.add_argument("--still-frame", type=nonnegative_int,
                        help="frame used by --pose still (default: first training frame)")
    parser.add_argument("--blink", choices=("source", "auto", "none"), default="source",
                        help="blinks from the replayed frames (source), random natural blinks (auto), or none")
    parser.add_argument("--portrait", action="store_true",
                        help="paste the face back into the original full-resolution frames")
    parser.add_argument("--no-restorer", action="store_true", help="with --portrait: plain paste-back even when "
                                                                   "the workspace has a trained restorer")
    parser.add_argument("--no-mouth", action="store_true", help="keep the head field's own mouth even when the "
                                                                "workspace has a trained mouth stage")
    parser.add_argument("--mouth-gain", type=positive_float,
                        help="style: scale of the mouth movement the audio predicts (default 1: the predictor's "
                             "spread is matched to the real mouth's; workspaces trained before that keep their "
                             "old factor of 2.5 built in). Without a mouth stage it stretches the audio codes "
                             "around their training mean")
    parser.add_argument("--source", type=Path, help="the original video, if it moved since preprocessing")
    parser.add_argument("--size", type=positive_int, help="render side in pixels (default: the subject's)")
    parser.add_argument("--frames-dir", type=Path, help="also write every frame as PNG here")
    parser.add_argument("--allow-silent", action="store_true", help="render silent audio instead of refusing it")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import compute_device, given, print_fallbacks, resolve_config, verbosity
    from synctalk.inference.video import RenderOptions, render_video

    cfg = resolve_config(args)
    device = compute_device(cfg)
    options = RenderOptions(pose=args.pose, blink=args.blink, still_frame=args.still_frame, portrait=args.portrait,
                            restorer=not args.no_restorer, mouth=not args.no_mouth, source=args.source, size=args.size,
                            frames_dir=args.frames_dir, allow_silent=args.allow_silent, seed=cfg.seed,
                            **given(mouth_gain=args.mouth_gain))
    report = render_video(args.workspace, args.audio, args.output, options, device=device,
                          progress=verbosity(args) >= 0)
    print(f"{report.n_frames} frames ({report.frame_size[0]}x{report.frame_size[1]}, {report.fps:g} fps) for "
          f"{report.audio_seconds:.2f} s of audio, rendered at {report.render_fps:.2f} frames/s")
    print(f"video: {report.video}")
    print_fallbacks()
    return 0
