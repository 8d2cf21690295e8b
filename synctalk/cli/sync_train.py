"""`synctalk sync-train CORPUS... -o sync.pt`: train the Face-Sync Controller's audio-visual sync model."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.cli.common import add_common_args, nonnegative_float, positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sync-train", help="train the audio-visual sync model on subjects or a corpus of talking videos",
        description="Train the sync model (audio tower + lower-face tower, contrastive) on subject directories, "
                    "videos, or folders of videos (e.g. LRS2/VoxCeleb). Resumable: run the same command again to "
                    "continue; Ctrl-C saves first. TensorBoard logs go to OUTPUT.tb/.")
    parser.add_argument("corpus", nargs="+", metavar="CORPUS",
                        help="subject directories, video files or folders of videos (KEY=VALUE config "
                             "overrides may follow)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="checkpoint to write (e.g. sync.pt)")
    parser.add_argument("--held-out", nargs="+", default=[], metavar="PATH",
                        help="clips scored during training (offset, LSE-D/C) and never trained on")
    parser.add_argument("--minutes", type=nonnegative_float, help="wall-clock budget (sync.budget_minutes)")
    parser.add_argument("--steps", type=positive_int, help="training steps (sync.max_steps)")
    parser.add_argument("--before-validation", action="store_true",
                        help="of subject directories, learn only from the frames before their validation frames "
                             "(a judge for `synctalk evaluate`, which scores renders of those frames)")
    parser.add_argument("--init", type=Path, help="start from this checkpoint (ours or a Wav2Lip/SyncTalk audio "
                                                  "encoder) instead of random weights")
    add_common_args(parser)
    parser.set_defaults(handler=run)


def split_overrides(args: argparse.Namespace) -> None:
    """argparse gives every trailing word to the first list; move KEY=VALUE words to the overrides."""
    is_override = [("=" in item and not Path(item).exists()) for item in args.corpus]
    args.overrides = [item for item, flag in zip(args.corpus, is_override, strict=True) if flag] + args.overrides
    args.corpus = [item for item, flag in zip(args.corpus, is_override, strict=True) if not flag]


def run(args: argparse.Namespace) -> int:
    from synctalk.audio.sync_data import load_clips
    from synctalk.audio.sync_train import train_sync_model
    from synctalk.cli.common import compute_device, resolve_config, verbosity
    from synctalk.errors import UserInputError

    split_overrides(args)
    if not args.corpus:
        raise UserInputError("sync-train: give at least one subject directory, video or folder of videos")
    if args.minutes is not None:
        args.overrides.append(f"sync.budget_minutes={args.minutes}")
    if args.steps is not None:
        args.overrides.append(f"sync.max_steps={args.steps}")
    from synctalk.io.outputs import check_output_file

    check_output_file(args.output, "sync model checkpoint", inputs=[*args.corpus, *args.held_out, args.init])
    cfg = resolve_config(args)
    device = compute_device(cfg)
    progress = verbosity(args) >= 0
    clips = load_clips(args.corpus, progress=progress, before_validation=args.before_validation)
    held_out = load_clips(args.held_out, progress=progress) if args.held_out else None
    report = train_sync_model(clips, args.output, cfg.sync, held_out=held_out, device=device,
                              seed=cfg.seed, progress=progress, init=args.init)
    print(f"{report.checkpoint}: {report.steps} steps, {report.seconds / 60:.1f} min of training, "
          f"{report.samples_per_s:.0f} samples/s, loss {report.loss:.3f}, batch accuracy {report.accuracy:.2f}")
    for entry in report.history[-1:]:
        for name, value in entry.items():
            if name != "step":
                print(f"held-out {name}: offset {value['offset']:+d} frames, LSE-D {value['lse_d']:.3f}, "
                      f"LSE-C {value['lse_c']:.3f}")
    return 0
