"""A lock file that keeps two runs out of one folder, and says who holds it.

    with FolderLock(subject, "preprocess"):     # SUBJECT/.synctalk.lock, removed on exit
        ...

The lock file holds the pid, host, start time and command of its holder. A second run on the same folder is
refused with those details. A lock left by a run that died (kill -9, power cut) is stale when its holder's pid is
no longer running on this host (or runs a different process: the pid was reused): it is taken over with a warning.
A lock from another host cannot be checked; the message says how to remove it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from synctalk.errors import UserInputError

log = logging.getLogger("synctalk")

LOCK_FILENAME = ".synctalk.lock"


class LockedError(UserInputError):
    """Another run holds the folder's lock."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (clock ticks since boot; Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name in () may hold spaces


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    if start is not None:
        current = _process_start(pid)
        if current is not None and current != start:
            return False  # the pid was reused by another process
    return True


def _age(seconds: float) -> str:
    from synctalk.progress import format_duration

    return format_duration(seconds)


class FolderLock:
    """Exclusive lock on `folder` (which must exist) for the duration of a `with` block."""

    def __init__(self, folder: str | Path, what: str):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_FILENAME
        self._held = False

    def holder(self) -> dict | None:
        """The lock file's content, {} when unreadable, None when there is no lock."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def _create(self) -> bool:
        info = {"pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname(),
                "started": time.time(), "started_text": time.strftime("%Y-%m-%d %H:%M:%S"), "what": self.what,
                "command": " ".join(sys.argv)}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return True

    def acquire(self) -> None:
        for _ in range(3):
            if self._create():
                self._held = True
                return
            holder = self.holder()
            if holder is None:  # released between our two looks
                continue
            if self._stale(holder):
                log.warning("%s: removing a stale lock (%s, pid %s on %s, started %s, is no longer running)",
                            self.path, holder.get("what", "a run"), holder.get("pid"), holder.get("host"),
                            holder.get("started_text", "?"))
                self._remove_stale(holder)
                continue
            raise LockedError(self._busy_message(holder))
        raise LockedError(f"{self.path}: could not take the lock (another run keeps taking it); try again")

    def _remove_stale(self, holder: dict) -> None:
        """Move the stale lock aside (a rename: of two runs that both judged it stale, one moves it); if what was
        moved is not the lock judged stale, another run has just taken the folder: put its lock back."""
        aside = self.path.with_name(f"{LOCK_FILENAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, json.JSONDecodeError):
            moved = {}
        if holder and moved != holder:
            try:
                os.link(aside, self.path)   # never replaces a lock taken in the meantime
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def _stale(self, holder: dict) -> bool:
        pid = holder.get("pid")
        if not isinstance(pid, int):
            # unreadable: a run killed while writing its lock (a few bytes, a moment); old enough means stale
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        if holder.get("host") != socket.gethostname():
            return False
        return not _alive(pid, holder.get("pid_start"))

    def _busy_message(self, holder: dict) -> str:
        if not holder:
            return (f"{self.folder} is locked by another run ({self.path} is being written); wait a minute and "
                    f"try again, or delete {self.path} if no synctalk command is running")
        started = holder.get("started")
        since = f", started {holder.get('started_text', '?')}"
        if isinstance(started, int | float):
            since += f" ({_age(time.time() - started)} ago)"
        same_host = holder.get("host") == socket.gethostname()
        where = "this machine" if same_host else f"host {holder.get('host')}"
        command = f": `{holder['command']}`" if holder.get("command") else ""
        fix = (f"wait for it to finish or stop it (kill {holder.get('pid')})" if same_host else
               f"wait for it to finish; if it is no longer running on {holder.get('host')}, delete {self.path}")
        return (f"{self.folder} is in use by another {holder.get('what', 'synctalk')} run (pid {holder.get('pid')} "
                f"on {where}{since}){command}. Two runs on one folder would overwrite each other's files; "
                f"{fix}, or write to another folder")

    def release(self) -> None:
        if self._held:
            self._held = False
            holder = self.holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
