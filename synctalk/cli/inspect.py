"""`synctalk inspect SUBJECT`: validate a subject directory and summarise it."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="validate a subject directory and print a summary",
                                   description="Checks every file that the finished preprocessing steps own "
                                               "against docs/dataset.md. Exit code 2 when something is wrong.")
    parser.add_argument("subject", type=Path, help="subject directory written by `synctalk preprocess`")
    parser.add_argument("--require", default="frames",
                        help="comma-separated steps that must be done, or 'train' for everything training "
                             "needs (default: frames)")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import resolve_config
    from synctalk.data import STEPS, TRAIN_STEPS, SubjectDataset
    from synctalk.errors import UserInputError

    cfg = resolve_config(args)
    require = TRAIN_STEPS if args.require == "train" else tuple(s for s in args.require.split(",") if s)
    unknown = [s for s in require if s not in STEPS]
    if unknown:
        raise UserInputError(f"--require: unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    ds = SubjectDataset(args.subject, require=require, cache_frames=cfg.data.frame_cache)
    print(ds)
    for name in STEPS:
        state = "done" if name in ds.steps else "missing"
        seconds = ds.meta.get("steps", {}).get(name, {}).get("seconds")
        print(f"  {name:<15} {state}" + (f"  ({seconds:.1f} s)" if isinstance(seconds, int | float) else ""))
    return 0
