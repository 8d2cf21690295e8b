"""`synctalk stream WORKSPACE --audio FILE|-`: render while the audio arrives; reports latency and FPS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synctalk.cli.common import add_common_args, positive_float, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stream", help="render while audio arrives (file at real-time pace, or raw PCM on stdin)",
        description="Frames come out as soon as their audio has arrived (lookahead ~0.27 s at 25 fps). Output: an "
                    ".mp4 (audio muxed at the end), a raw RGB24 file, or '-' for raw RGB24 on stdout, e.g. "
                    "`... -o - | ffplay -f rawvideo -pixel_format rgb24 -video_size 256x256 -framerate 25 -`.")
    parser.add_argument("workspace", type=Path, help="workspace from `synctalk train`")
    parser.add_argument("--audio", required=True,
                        help="audio file (read at real-time pace), or '-' for raw s16le mono PCM on stdin")
    parser.add_argument("-o", "--output", required=True, help="output .mp4, raw RGB24 file, or '-' (stdout)")
    parser.add_argument("--rate", type=positive_int, default=16000, help="sample rate of PCM on stdin (Hz)")
    parser.add_argument("--chunk", type=positive_float, default=0.2, help="audio chunk length in seconds")
    parser.add_argument("--as-fast-as-possible", action="store_true",
                        help="read an audio file without waiting for real time (benchmarks)")
    parser.add_argument("--pose", choices=("train", "still", "smooth"), default="train", help="as in render")
    parser.add_argument("--blink", choices=("source", "auto", "none"), default="source", help="as in render")
    parser.add_argument("--size", type=positive_int, help="render side in pixels (default: the subject's)")
    parser.add_argument("--no-mouth", action="store_true", help="as in render")
    parser.add_argument("--mouth-gain", type=positive_float, help="as in render")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import compute_device, given, print_fallbacks, resolve_config
    from synctalk.inference.stream import stream
    from synctalk.inference.video import RenderOptions

    cfg = resolve_config(args)
    device = compute_device(cfg)
    options = RenderOptions(pose=args.pose, blink=args.blink, size=args.size, mouth=not args.no_mouth, seed=cfg.seed,
                            **given(mouth_gain=args.mouth_gain))
    report = stream(args.workspace, args.audio, args.output, options, rate=args.rate, chunk_s=args.chunk,
                    realtime=not args.as_fast_as_possible, device=device)
    print(report.summary(), file=sys.stderr if args.output == "-" else sys.stdout)
    print_fallbacks(sys.stderr if args.output == "-" else sys.stdout)
    return 0
