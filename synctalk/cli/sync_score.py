"""`synctalk sync-score VIDEO --model sync.pt`: audio-video offset, LSE-D and LSE-C of a talking video."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synctalk.cli.common import add_common_args, nonnegative_float, nonnegative_int, positive_float


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sync-score", help="measure lip sync of a video (offset, LSE-D, LSE-C)",
        description="Score a talking video (or subject directory) with a sync model from `synctalk sync-train` "
                    "or the official syncnet_v2.model. The model must not have been trained on these frames.")
    parser.add_argument("video", type=Path, help="video file or subject directory")
    parser.add_argument("--audio", type=Path, help="speech to pair with the video (default: its own track)")
    parser.add_argument("--model", type=Path, required=True, help="sync.pt or syncnet_v2.model")
    parser.add_argument("--max-offset", type=nonnegative_int, default=15, help="search offsets -N..N frames")
    parser.add_argument("--start", type=nonnegative_float, default=0.0, help="score from this time (s)")
    parser.add_argument("--end", type=positive_float, help="score up to this time (s)")
    parser.add_argument("--plot", type=Path, help="write the distance-vs-offset curve to this PNG")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.audio.score import offset_curve_plot, sync_score
    from synctalk.cli.common import compute_device, resolve_config, verbosity
    from synctalk.errors import UserInputError
    from synctalk.io.outputs import check_output_file

    if args.end is not None and args.end <= args.start:
        raise UserInputError(f"--end {args.end:g} is not after --start {args.start:g}; give a later --end (seconds)")
    if args.plot:
        check_output_file(args.plot, "plot", suffixes=(".png",), flag="--plot", inputs=[args.video, args.audio])
    cfg = resolve_config(args)
    device = compute_device(cfg)
    score = sync_score(args.video, args.audio, checkpoint=args.model, max_offset=args.max_offset,
                       start_s=args.start, end_s=args.end, device=device,
                       progress=verbosity(args) >= 0)
    if args.plot:
        offset_curve_plot({args.video.name: score}, args.plot)
    if args.json:
        print(json.dumps(score.summary(), indent=1))
    else:
        print(f"{args.video}: offset {score.offset:+d} frames ({score.offset / score.fps * 1000:+.0f} ms; negative "
              f"= audio late), LSE-D {score.lse_d:.3f}, LSE-C {score.lse_c:.3f} over {len(score.frames)} windows")
    return 0
