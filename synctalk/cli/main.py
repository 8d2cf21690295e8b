"""`synctalk` entry point: builds the parser from the command modules and maps errors to exit codes.

Exit codes: 0 success, 1 failure, 2 bad usage or bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import synctalk
import synctalk.cli
from synctalk.errors import SyncTalkError

NOT_COMMANDS = {"main", "common"}
log = logging.getLogger("synctalk")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synctalk",
        description="Turn a few minutes of video of one person talking into a digital double, then render "
                    "that person saying new audio.",
        epilog="Run `synctalk COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"synctalk {synctalk.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(subparsers)
    return parser


def command_modules() -> list:
    modules = []
    for info in sorted(pkgutil.iter_modules(synctalk.cli.__path__), key=lambda m: m.name):
        if info.name in NOT_COMMANDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"synctalk.cli.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return modules


def main(argv: list[str] | None = None) -> int:
    from synctalk.cli.common import verbosity
    from synctalk.runtime import configure_threads, setup_logging

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may also come after options (`... -o out sync.lr=1e-4`)
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    if len(overrides) < len(extra) or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    setup_logging(verbosity(args))
    log.debug("%s", configure_threads())  # before any command imports torch
    try:
        return int(args.handler(args) or 0)
    except SyncTalkError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:  # an internal bug: say so, keep the traceback for -v
        if verbosity(args) > 0:
            log.exception("internal error")
        else:
            log.error("internal error: %s: %s (rerun with -v for the traceback and report it)",
                      type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
