"""synctalk.progress: log lines off a terminal at a bounded rate, with rate/ETA, under a fake clock (no sleeping)."""

from __future__ import annotations

import logging
import math

import pytest

from synctalk.progress import Progress, format_duration, track


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="synctalk.progress")

    def read() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "synctalk.progress"]
    return read


def test_log_lines_at_start_every_interval_and_at_close(lines):
    clock = Clock()
    with Progress("evaluate: render", total=100, unit="frame", interval_s=10, clock=clock, terminal=False) as bar:
        assert lines() == ["evaluate: render 0/100 frames (0.0%), starting"]
        for _ in range(100):
            clock.advance(1.0)        # 1 frame/s: a line every 10 frames, never more often
            bar.update(1)
    out = lines()
    assert len(out) == 1 + 9 + 1       # start, one per 10 s, the last at close (no line of its own at 100/100)
    assert out[1] == "evaluate: render 10/100 frames (10.0%), 1 frames/s, elapsed 10s, ETA 1m30s"
    assert out[5] == "evaluate: render 50/100 frames (50.0%), 1 frames/s, elapsed 50s, ETA 50s"
    assert out[-1] == "evaluate: render 100/100 frames (100.0%), 1 frames/s, elapsed 1m40s, done"
    assert bar.lines == len(out)


def test_many_fast_updates_stay_bounded(lines):
    clock = Clock()
    bar = Progress("train head", total=10_000, unit="step", interval_s=20, clock=clock, terminal=False)
    for _ in range(6400):
        clock.advance(1 / 64)         # 100 s in all at 64 steps/s (exact binary fractions)
        bar.update()
    bar.close()
    bar.close()                       # a second close writes nothing
    out = lines()
    assert len(out) == 1 + 5 + 1
    assert out[1] == "train head 1280/10000 steps (12.8%), 64 steps/s, elapsed 20s, ETA 2m16s"
    assert out[-1] == "train head 6400/10000 steps (64.0%), 64 steps/s, elapsed 1m40s, stopped"


def test_rate_and_eta_count_only_this_run_when_resuming(lines):
    clock = Clock()
    bar = Progress("train head", total=1000, unit="step", initial=400, interval_s=30, clock=clock, terminal=False)
    assert lines()[0] == "train head 400/1000 steps (40.0%), resuming"
    clock.advance(30.0)
    bar.update(60)                    # 60 steps in 30 s = 2 steps/s; 540 left = 270 s
    assert bar.rate == pytest.approx(2.0) and bar.eta == pytest.approx(270.0)
    assert lines()[1] == "train head 460/1000 steps (46.0%), 2 steps/s, elapsed 30s, ETA 4m30s"
    clock.advance(5.0)
    bar.close()                       # stopped early (a time budget): said so
    assert lines()[-1] == "train head 460/1000 steps (46.0%), 1.71 steps/s, elapsed 35s, stopped"


def test_unknown_total_has_no_percent_or_eta(lines):
    clock = Clock()

    def items():
        for i in range(5):
            clock.advance(4.0)
            yield i

    assert list(track(items(), "corpus", unit="video", interval_s=10, clock=clock, terminal=False)) == list(range(5))
    out = lines()
    assert out[0] == "corpus 0 videos, starting"
    assert out[1] == "corpus 3 videos, 0.25 videos/s, elapsed 12s"   # 12 s after 3 items: the first due line
    assert out[-1] == "corpus 5 videos, 0.25 videos/s, elapsed 20s, done"
    assert all("%" not in line and "ETA" not in line for line in out)


def test_postfix_is_appended_and_iterables_give_their_length(lines):
    clock = Clock()
    bar = Progress("render", [1, 2, 3], unit="batch", interval_s=1, clock=clock, terminal=False)
    assert bar.total == 3
    for _ in bar:
        clock.advance(2.0)
        bar.set_postfix("loss 0.0123", psnr="28.4")
    out = lines()
    assert out[1] == "render 1/3 batches (33.3%), 0.5 batches/s, elapsed 2.0s, ETA 4.0s, loss 0.0123, psnr 28.4"
    assert out[-1].endswith("done, loss 0.0123, psnr 28.4") and len(out) == 4


def test_exceptions_and_early_breaks_say_so(lines):
    clock = Clock()
    with pytest.raises(KeyboardInterrupt), Progress("x", total=4, clock=clock, terminal=False) as bar:
        bar.update(1)
        raise KeyboardInterrupt
    assert lines()[-1] == "x 1/4 items (25.0%), elapsed 0.0s, interrupted"
    with pytest.raises(RuntimeError), Progress("y", total=4, clock=clock, terminal=False):
        raise RuntimeError("boom")
    assert lines()[-1].endswith("failed")
    bar = Progress("z", range(10), clock=clock, terminal=False)
    for i in bar:
        if i == 2:
            break
    del i
    bar_iter_closed = lines()[-1]
    assert bar_iter_closed.startswith("z 2/10 items") and bar_iter_closed.endswith("stopped")


def test_disabled_and_terminal_forms_write_no_log_lines(lines, capsys):
    clock = Clock()
    with Progress("quiet", total=3, enabled=False, clock=clock) as bar:
        bar.update(3)
    with Progress("tty", total=3, terminal=True, clock=clock) as bar:   # a tqdm bar on stderr instead
        bar.update(3)
        bar.set_postfix(loss="0.1")
    assert lines() == []
    assert "tty" in capsys.readouterr().err


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="total"):
        Progress("x", total=-1, terminal=False)
    with pytest.raises(ValueError, match="interval"):
        Progress("x", total=1, interval_s=0, terminal=False)
    with pytest.raises(ValueError, match="update"):
        Progress("x", total=1, terminal=False).update(-1)
    with pytest.raises(TypeError, match="iterable"):
        iter(Progress("x", total=1, terminal=False)).__next__()


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "0.2s"), (9.96, "10.0s"), (42, "42s"), (185, "3m05s"),
                                               (7620, "2h07m"), (math.nan, "?"), (math.inf, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_an_exhausted_iterable_is_done_even_short_of_an_estimated_total(lines):
    clock = Clock()
    assert list(track(iter(range(3)), "frames", total=4, unit="frame", clock=clock, terminal=False)) == [0, 1, 2]
    assert lines()[-1] == "frames 3/4 frames (75.0%), elapsed 0.0s, done"   # decoding gave one frame less
