"""`synctalk ablate SUBJECT --variants configs/ablations/ -o OUT/`: train and evaluate config variants, one table."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="train + evaluate each config variant of a folder and tabulate the metrics",
        description="Every *.yaml in --variants is one variant (named after the file; it starts from a recipe "
                    "with _base_ and changes a few keys; an optional 'evaluate: {portrait: true}' section "
                    "evaluates the portrait paste-back). Each is trained into OUT/<variant>/workspace and "
                    "evaluated into OUT/<variant>/report; then OUT/ablation.csv, OUT/ablation.md and "
                    "OUT/charts/<metric>.png compare them. Resumable: finished variants are not run again. A "
                    "variant that fails (missing weights, bad key) is listed as skipped with the reason. "
                    "KEY=VALUE overrides apply to every variant.")
    parser.add_argument("subject", type=Path, help="subject directory from `synctalk preprocess`")
    parser.add_argument("--variants", type=Path, default=None,
                        help="folder of variant YAML files (default: the project's configs/ablations/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="scale every variant's training steps and time budget (default: 1.0)")
    parser.add_argument("--max-frames", type=positive_int, help="evaluate only the first N held-out frames")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import print_fallbacks, verbosity
    from synctalk.errors import UserInputError
    from synctalk.eval.ablate import ablate

    if args.config is not None:
        raise UserInputError("ablate takes no --config: each variant file names its base recipe with _base_ "
                             "(KEY=VALUE overrides apply to every variant)")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    device = None
    if args.device is not None:
        from synctalk.runtime import resolve_device

        device = resolve_device(args.device)
        overrides.append(f"device={args.device}")
    from synctalk.config.loader import configs_dir

    variants = args.variants if args.variants is not None else configs_dir() / "ablations"
    entries = ablate(args.subject, variants, args.output, budget=args.budget, overrides=overrides,
                     device=device, max_frames=args.max_frames, progress=verbosity(args) >= 0)
    print((args.output / "ablation.md").read_text())
    done = sum(e["status"] == "ok" for e in entries)
    print(f"ablation: {done} of {len(entries)} variants evaluated; {args.output.resolve()} (ablation.csv, "
          "ablation.md, charts/)")
    print_fallbacks()
    return 0 if done else 1
