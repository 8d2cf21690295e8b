"""Output paths checked before the work: a render, a training run or the demo must not compute for minutes and then
fail to write (a folder that cannot be written, a file where a folder is expected, a wrong suffix), and must never
write into someone else's folder or over its own input.

    check_output_file(out, what="output video", suffixes=(".mp4",), inputs=[audio])   # before rendering
    check_output_dir(workspace, what="workspace", flag="-w", ours=is_workspace)         # before training

Nothing is created: the nearest existing folder is probed with a temporary file that is removed at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from synctalk.errors import UserInputError

RESOLVED_CONFIG_HEADER = "# resolved synctalk"   # first line of a config.yaml that synctalk wrote (save_config)


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def folder_listing(folder: Path, limit: int = 4, ignored: Iterable[str] = ()) -> str:
    """The first ``limit`` names in ``folder`` (folders with a slash) and how many more, for messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(folder).iterdir() if p.name not in ignored)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_writable_folder(folder: str | Path, what: str, flag: str = "-o") -> None:
    """Raise UserInputError unless ``folder`` exists and can be written, or can be created (its nearest existing
    ancestor is a folder that can be written)."""
    folder = Path(folder)
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise UserInputError(f"{folder}: cannot be created for the {what}: {existing} is a file, not a folder; "
                             f"choose another path with {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".synctalk-write-check.", dir=existing)
    except OSError as exc:
        where = "in it" if existing == folder.absolute() else f"in {existing}, where it would be created"
        raise UserInputError(f"{folder}: cannot write the {what} {where} ({exc.strerror or exc}); choose a folder "
                             f"you can write to with {flag}, or fix the folder's permissions") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, what: str, suffixes: Iterable[str] | None = None, flag: str = "-o",
                      inputs: Iterable[str | Path | None] = ()) -> Path:
    """``path`` as a file the work can write at the end: a known suffix (``suffixes``, lower case with the dot),
    not a folder, not one of the ``inputs``, in a folder that can be written or created. Returns it."""
    path = Path(path)
    suffixes = tuple(suffixes or ())
    if path.is_dir():
        raise UserInputError(f"{path}: is a folder; {flag} takes a file name for the {what}, e.g. {flag} "
                             f"{path / ('out' + (suffixes[0] if suffixes else ''))}")
    if suffixes and path.suffix.lower() not in suffixes:
        example = path.with_suffix(suffixes[0]).name if path.name else f"out{suffixes[0]}"
        raise UserInputError(f"{path}: the {what} must be a {' or '.join(suffixes)} file (e.g. {flag} {example})")
    for source in inputs:
        if source is not None and path.exists() and Path(source).exists() and path.samefile(source):
            raise UserInputError(f"{path}: is also an input of this command and would be overwritten; write the "
                                 f"{what} to another file with {flag}")
    check_writable_folder(path.parent, what, flag)
    return path


def check_output_dir(path: str | Path, what: str, flag: str = "-o",
                     ours: Callable[[Path], bool] | None = None) -> Path:
    """``path`` as a folder the work may fill: not a file, writable or creatable, and either empty, missing, or
    one that ``ours(path)`` recognises as written by this command before (resuming it). Returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{path}: is a file, not a folder; {flag} takes a folder: a new or empty one, or a "
                             f"{what} made before (to resume it)")
    check_writable_folder(path, what, flag)
    if path.is_dir() and ours is not None and any(path.iterdir()) and not ours(path):
        raise UserInputError(f"{path}: holds files that synctalk did not write ({folder_listing(path)}), so it is "
                             f"not a {what} to resume; give a new or empty folder with {flag} (nothing in it was "
                             "changed)")
    return path


def written_config(folder: Path) -> bool:
    """Whether ``folder/config.yaml`` is a resolved config that synctalk wrote (save_config)."""
    config = Path(folder) / "config.yaml"
    try:
        with open(config, encoding="utf-8", errors="replace") as fh:
            return fh.readline().startswith(RESOLVED_CONFIG_HEADER)
    except OSError:
        return False
