"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader never sees a half-written file, and an interrupted run leaves the previous version intact. A write that
fails because the disk is full raises :class:`synctalk.errors.DiskFullError` naming the path and the space left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synctalk.errors import DiskFullError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = "No space left on device"   # how ffmpeg and other tools say it


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota (ENOSPC, EDQUOT)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if DISK_FULL_TEXT in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: str | Path) -> int | None:
    """Free space on the disk that holds ``path`` (its nearest existing folder), or None when unknown."""
    from synctalk.io.outputs import nearest_existing

    try:
        return shutil.disk_usage(nearest_existing(Path(path))).free
    except OSError:
        return None


def disk_full_error(path: str | Path, written: int | None = None, what: str = "") -> DiskFullError:
    """The message for a write to ``path`` that the full disk stopped (``written`` bytes of it had been written)."""
    free = free_bytes(path)
    parts = [f"disk full at {path}" + (f" while writing {what}" if what else "")]
    if free is not None:
        parts.append(f"{free / 1e6:.0f} MB free on that disk")
    if written:
        parts.append(f"it needs more than the {written / 1e6:.1f} MB written before the disk filled")
    return DiskFullError("; ".join(parts) + ". Free some space (or write to another disk) and run the command again; "
                         "the previous version of the file, if any, is intact")


def temp_path_beside(path: Path) -> Path:
    """A new empty temporary file in `path`'s folder (created with its parents), named after `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so tools that look at it still work);
    on success it is renamed to `path`, on error it is removed.

    >>> with atomic_path("out/video.mp4") as tmp:   # doctest: +SKIP
    ...     write_video(tmp, frames)
    """
    path = Path(path)
    try:
        tmp = temp_path_beside(path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, tmp.stat().st_size if tmp.is_file() else None) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
