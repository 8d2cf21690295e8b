"""`synctalk train SUBJECT -w WORKSPACE`: learn the person (head → lips → torso), resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the head and torso models on a preprocessed subject",
        description="Stages head (random rays) → lips (mouth patches) → torso (head frozen) → portrait (seam "
                    "restorer). Each stage is resumable: run the same command again to continue; Ctrl-C saves "
                    "first. TensorBoard logs go to WORKSPACE/tb. Recipes: --config default (GPU, full quality), "
                    "cpu, demo.")
    parser.add_argument("subject", type=Path, help="subject directory from `synctalk preprocess`")
    parser.add_argument("-w", "--workspace", type=Path, required=True, help="folder for checkpoints and logs")
    stages = ("head", "lips", "torso", "mouth", "portrait")
    parser.add_argument("--stages", nargs="+", choices=stages, default=list(stages),
                        help="stages to run (default: all, in order; portrait needs the original video)")
    parser.add_argument("--redo", nargs="+", choices=stages, default=[],
                        help="start these stages over (drop their checkpoints), e.g. --redo torso after changing "
                             "train.torso_steps")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from synctalk.cli.common import compute_device, print_fallbacks, resolve_config, verbosity
    from synctalk.runtime import seed_everything
    from synctalk.train.trainer import train

    cfg = resolve_config(args)
    seed_everything(cfg.seed)
    report = train(args.subject, args.workspace, cfg, device=compute_device(cfg),
                   progress=verbosity(args) >= 0, stages=tuple(args.stages), redo=tuple(args.redo))
    for line in report.lines():
        print(line)
    print(f"workspace: {report.workspace}")
    print_fallbacks()
    return 0
