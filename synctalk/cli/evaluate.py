"""`synctalk evaluate WORKSPACE -o REPORT/` (or `--compare A B`): metrics, table and sheets of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM/MS-SSIM/LPIPS/LMD/AUE*/FID and LSE-D/C of a trained workspace",
        description="Renders the held-out frames (or --audio) and writes metrics.json, metrics.md and sheet.png "
                    "to -o. Metrics whose weights are missing are listed as skipped with the reason. "
                    "--compare A B prints a diff table of two reports.")
    parser.add_argument("workspace", type=Path, nargs="?", help="workspace from `synctalk train`")
    parser.add_argument("-o", "--output", type=Path, help="report folder")
    parser.add_argument("--split", default="val", help="subject split to evaluate (default: val)")
    parser.add_argument("--audio", type=Path, help="also render this speech and score its lip sync")
    parser.add_argument("--portrait", action="store_true", help="evaluate the portrait paste-back at full size")
    parser.add_argument("--max-frames", type=frame_count, metavar="N",
                        help="only the first N frames of the split (N >= 1; leave it out for every frame)")
    parser.add_argument("--size", type=positive_int, metavar="N",
                        help="render and score at N x N pixels instead of the subject's frame size (the real frames "
                             "are resized to N; faster on a CPU; reports made at different sizes do not compare)")
    parser.add_argument("--silent", action="store_true",
                        help="control run: drive the frames with silent-audio features (LMD should get worse)")
    parser.add_argument("--mouth-gain", type=float, help="as in `synctalk render`")
    parser.add_argument("--sync-model", type=Path, help="sync judge (default: SUBJECT/sync.pt)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="diff two reports")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def frame_count(text: str) -> int:
    """argparse type of --max-frames: a whole number >= 1 (0 would be no frames, not all of them)."""
    from synctalk.cli.common import whole_number

    value = whole_number(text, "a whole number of frames")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} frames would evaluate nothing; give 1 or more, or leave "
                                         "--max-frames out to evaluate every frame of the split")
    return value


def run(args: argparse.Namespace) -> int:
    from synctalk.errors import UserInputError

    if args.compare:
        from synctalk.eval.evaluate import compare

        print(compare(*args.compare))
        return 0
    if args.workspace is None or args.output is None:
        raise UserInputError("evaluate needs WORKSPACE and -o REPORT_DIR (or --compare A B)")
    from synctalk.cli.common import compute_device, given, print_fallbacks, resolve_config, verbosity
    from synctalk.eval.evaluate import EvaluateOptions, evaluate

    cfg = resolve_config(args)
    device = compute_device(cfg)
    options = EvaluateOptions(split=args.split, audio=args.audio, portrait=args.portrait,
                              max_frames=args.max_frames, sync_model=args.sync_model,
                              silent=args.silent, size=args.size, **given(mouth_gain=args.mouth_gain))
    result = evaluate(args.workspace, args.output, options, device=device,
                      progress=verbosity(args) >= 0)
    print((args.output / "metrics.md").read_text())
    print(f"report: {args.output.resolve()} (metrics.json, metrics.md, sheet.png)")
    print_fallbacks()
    return 0 if result else 1
