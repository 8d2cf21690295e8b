"""`synctalk demo`: the whole pipeline on the built-in sample clip."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, resolve_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the pipeline end to end on a built-in sample (no downloads)",
        description="Make a short talking clip from assets that ship with the installed packages, then run "
                    "every pipeline stage on it and print where the outputs are.")
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output folder")
    add_common_args(parser, default_config="demo")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import compute_device, print_fallbacks
    from synctalk.demo import run_demo
    from synctalk.runtime import seed_everything

    cfg = resolve_config(args)
    seed_everything(cfg.seed)
    device = compute_device(cfg)
    print(f"synctalk demo -> {args.output.resolve()} (device: {device})")
    report = run_demo(cfg, args.output)
    for name in report.stages_run:
        print(f"  done  {name:<11} {report.seconds[name]:6.1f} s")
    for name in report.stages_blocked:
        print(f"  skip  {name:<11} (model file missing: see the warning above)")
    for line in report.stages_next:
        print(f"  next  {line}  [not built yet]")
    print(f"video: {report.video.resolve() if report.video else '(none)'}")
    print_fallbacks()
    return 0
