"""Progress of long work, on a terminal and in logs.

One helper for every loop that can run for minutes (training steps, rendering, evaluation, per-frame
preprocessing). Where it is shown depends on where standard error goes:

- a terminal (``sys.stderr.isatty()``): a tqdm bar, redrawn in place;
- anything else (a log file, CI, ``nohup``, a pipe): plain ``INFO`` lines through :mod:`logging`
  (logger ``synctalk.progress``), one when the work starts, then at most one every ``interval_s`` seconds, and a
  last one when it ends, each with what runs, done/total, percent, rate, elapsed time and ETA::

      evaluate: render 12/178 frames (6.7%), 0.102 frames/s, elapsed 1m58s, ETA 27m07s
      train head: 5000/5000 steps (100.0%), 9.81 steps/s, elapsed 8m30s, done, loss 0.0123

Use it as a context manager (``update(n)``, ``set_postfix(...)``) or wrap an iterable::

    with Progress("render", total=n, unit="frame", enabled=progress) as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))
    for frame in Progress("evaluate: render", frames, unit="frame", enabled=progress):
        ...

``enabled=False`` (``-q``, library callers that asked for silence) shows nothing anywhere.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

log = logging.getLogger("synctalk.progress")

T = TypeVar("T")

DEFAULT_INTERVAL_S = 20.0   # log lines at most this often (plus the first and the last)


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` for an unknown (NaN or infinite) duration."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_rate(rate: float) -> str:
    """Three significant digits (``0.102``, ``9.81``, ``1234``)."""
    if not math.isfinite(rate):
        return "?"
    return f"{rate:.0f}" if rate >= 1000 else f"{rate:.3g}"


def _plural(unit: str, count: float) -> str:
    if count == 1 or not unit or unit.endswith("s") or not unit[-1].isalpha() or unit.isupper():
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


class Progress(Generic[T]):
    """Progress of ``total`` items (None: unknown) of ``what``; see the module docstring.

    Args:
        what: what runs, the start of every line (``"evaluate: render"``).
        iterable: optional items to iterate over (``for x in Progress(...)`` updates by one per item and closes
            at the end); ``total`` defaults to its ``len()`` when it has one.
        total: number of items, or None when unknown (lines then show the count and the rate, no percent/ETA).
        unit: what one item is (``"frame"``, ``"step"``); plural forms are made for the lines.
        initial: items already done before this run (a resumed training); the rate counts only this run's.
        enabled: False shows nothing anywhere.
        leave: keep the terminal bar on screen when done (terminal only).
        interval_s: least seconds between two log lines (not on a terminal).
        clock: seconds, monotonic (tests inject a fake one).
        terminal: force the terminal (True) or the log (False) form; None decides by ``sys.stderr.isatty()``.
        logger: where the log lines go (default ``synctalk.progress``).
    """

    def __init__(self, what: str, iterable: Iterable[T] | None = None, *, total: int | None = None,
                 unit: str = "item", initial: int = 0, enabled: bool = True, leave: bool = True,
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 terminal: bool | None = None, logger: logging.Logger | None = None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0 or None, got {total}")
        if interval_s <= 0:
            raise ValueError(f"progress interval_s must be positive, got {interval_s}")
        self.what, self.iterable, self.total, self.unit = what, iterable, total, unit
        self.initial = self.done = int(initial)
        self.enabled, self.interval_s, self.clock = enabled, float(interval_s), clock
        self.logger = logger or log
        self.postfix = ""
        self.closed = False
        self.lines = 0                        # log lines written (log form)
        self._bar: Any = None
        self._to_log = False
        self.started = self._last_line = clock()
        if not enabled:
            return
        if _stderr_is_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=self.initial, desc=what, unit=unit, leave=leave,
                             file=sys.stderr, dynamic_ncols=True)
        else:
            self._to_log = True
            self._emit("resuming" if self.initial else "starting", eta=False, timing=False)

    # ------------------------------------------------------------------------------------------- use
    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError(f"Progress('{self.what}') was made without an iterable to iterate over")
        completed = False
        try:
            for item in self.iterable:
                yield item
                self.update(1)
            completed = True
        finally:
            self.close("done" if completed else "stopped")  # an exhausted iterable is done whatever its total said

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        if n < 0:
            raise ValueError(f"progress update must be >= 0, got {n}")
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif (self._to_log and not self.closed and (self.total is None or self.done < self.total)
              and self.clock() - self._last_line >= self.interval_s):
            self._emit()  # (when every item is done, the line at close says so)

    def set_postfix(self, text: str | None = None, **values: Any) -> None:
        """Text shown after the numbers (``loss 0.0123``); keyword values are joined as ``name value``."""
        parts = [text] if text else []
        parts += [f"{name} {value}" for name, value in values.items()]
        self.postfix = ", ".join(parts)
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix, refresh=False)

    def close(self, status: str | None = None) -> None:
        """End the bar, or write the last log line with ``status`` (default ``done`` when every item is done or
        the total is unknown, else ``stopped``). A second close does nothing."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._to_log:
            if status is None:
                status = "done" if self.total is None or self.done >= self.total else "stopped"
            self._emit(status, eta=False)

    # -------------------------------------------------------------------------------------- numbers
    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        """Items per second of this run (NaN before any time passed)."""
        elapsed = self.elapsed
        return (self.done - self.initial) / elapsed if elapsed > 0 else math.nan

    @property
    def eta(self) -> float:
        """Seconds left at the current rate (NaN when the total is unknown or nothing was done yet)."""
        rate = self.rate
        if self.total is None or not (rate > 0):
            return math.nan
        return max(self.total - self.done, 0) / rate

    def line(self, status: str | None = None, eta: bool = True, timing: bool = True) -> str:
        """The log line for the current state (``timing``: with rate and elapsed time; ``eta``: and the ETA)."""
        unit = self.unit
        if self.total is None:
            count = f"{self.done} {_plural(unit, self.done)}"
        else:
            percent = 100.0 * self.done / self.total if self.total else 100.0
            count = f"{self.done}/{self.total} {_plural(unit, self.total)} ({percent:.1f}%)"
        parts = [f"{self.what} {count}"]
        if timing and self.done > self.initial and math.isfinite(self.rate):
            parts.append(f"{format_rate(self.rate)} {_plural(unit, 2)}/s")
        if timing:
            parts.append(f"elapsed {format_duration(self.elapsed)}")
        if timing and eta and self.total is not None:
            parts.append(f"ETA {format_duration(self.eta)}")
        if status:
            parts.append(status)
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _emit(self, status: str | None = None, eta: bool = True, timing: bool = True) -> None:
        self.logger.info("%s", self.line(status, eta, timing))
        self.lines += 1
        self._last_line = self.clock()


def track(iterable: Iterable[T], what: str, **options: Any) -> Iterator[T]:
    """``for x in track(items, "what", unit=..., enabled=...)``: :class:`Progress` over an iterable."""
    return iter(Progress(what, iterable, **options))
