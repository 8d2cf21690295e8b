"""Flags shared by every subcommand, and config resolution from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from synctalk.config import SyncTalkConfig, load_config


def add_common_args(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    """--config, --device, --seed, -v/-q and trailing key=value overrides (add after the command's positionals)."""
    group = parser.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", default=default_config,
                       help="YAML config file or recipe name in configs/"
                            + (f" (default: {default_config})" if default_config else ""))
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                       help="compute device (default: the config's, normally auto)")
    group.add_argument("--seed", type=seed_value, default=None, help="random seed (default: the config's)")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. preprocess.fps=30 demo.seconds=4")


def resolve_config(args: argparse.Namespace) -> SyncTalkConfig:
    """Config from --config, then KEY=VALUE overrides, then --device/--seed."""
    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return load_config(SyncTalkConfig, args.config, overrides)


def compute_device(cfg: SyncTalkConfig):
    """The config's device resolved (auto → cuda when available), with the process's float32 precision set for it
    (``train.tf32``, see synctalk.runtime.configure_precision). Every command that computes starts with it."""
    import logging

    from synctalk.runtime import configure_precision, resolve_device

    device = resolve_device(cfg.device)
    logging.getLogger("synctalk").debug(configure_precision(device, cfg.train.tf32))
    return device


def print_fallbacks(file=None) -> None:
    """The summary line naming the kernels that ran on the slow PyTorch reference on CUDA (why, and the fix), when
    there were any (cuda_ext.build.fallback_summary)."""
    import sys

    from cuda_ext.build import fallback_summary

    line = fallback_summary()
    if line:
        print(line, file=file or sys.stdout)


def verbosity(args: argparse.Namespace) -> int:
    return -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is not an existing directory")
    return path


def whole_number(text: str, what: str = "a whole number") -> int:
    """``int(text)``, or the argparse error naming the value."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (sizes, counts), refused at parse time with the value named."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give a whole number of 1 or more")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (frame indices, offsets)."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a whole number of 0 or more")
    return value


def seed_value(text: str) -> int:
    """argparse type: a random seed, 0 <= seed < 2**32 (what numpy accepts)."""
    value = nonnegative_int(text)
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value} is too large for a seed; give a whole number below 2**32")
    return value


def _number(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (rates, lengths, gains)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not positive; give a number greater than 0")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (times, budgets where 0 means none)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is negative; give a number of 0 or more")
    return value


def given(**values) -> dict:
    """The keyword arguments that were given (not None), so an options dataclass keeps its own defaults."""
    return {key: value for key, value in values.items() if value is not None}
