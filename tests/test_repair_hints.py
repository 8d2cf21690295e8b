"""Repair hints outside preprocessing (tests/preprocess/test_subject_folder.py has those): each hint is a command
that, run as printed, repairs what it names."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from conftest import speech_like, tiny_train_config

from synctalk.cli.main import main


def _command(message: str, start: str) -> list[str]:
    """The command in backquotes (or to the end of the line) that follows `start` in a message, as argv."""
    text = message.split(start, 1)[1].strip()
    text = text[1:].split("`", 1)[0] if text.startswith("`") else text.splitlines()[0]
    argv = shlex.split(text)
    assert argv[0] == "synctalk", text
    return argv[1:]


def test_a_workspace_without_a_head_names_the_command_that_trains_it(trained_workspace, tmp_path, capsys):
    from synctalk.io.media import write_wav
    from synctalk.train.trainer import train

    _, subject = trained_workspace
    workspace = tmp_path / "ws"
    train(subject, workspace, tiny_train_config(portrait_steps=0), progress=False, stages=("mouth",))
    write_wav(tmp_path / "a.wav", speech_like(0.4))
    render = ["render", str(workspace), "--audio", str(tmp_path / "a.wav"), "--size", "16", "-q"]
    assert main([*render, "-o", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "has no head checkpoint yet" in err
    assert main(_command(err, "train the head (and the rest) with:") + ["-q"]) == 0
    assert main([*render, "-o", str(tmp_path / "b.mp4")]) == 0


def test_compare_without_a_report_names_the_evaluate_command(trained_workspace, tmp_path, capsys):
    workspace, _ = trained_workspace
    report = tmp_path / "report"
    assert main(["evaluate", "--compare", str(report), str(report), "-q"]) == 2
    argv = _command(capsys.readouterr().err, "write one with")
    assert argv[:2] == ["evaluate", "WORKSPACE"]
    assert main(["evaluate", str(workspace), *argv[2:], "--max-frames", "1", "--size", "16", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(report), str(report / "metrics.json"), "-q"]) == 0
    assert "| metric |" in capsys.readouterr().out


def test_the_missing_judge_hint_trains_one_on_the_frames_before_validation(tmp_path, make_subject, capsys):
    from types import SimpleNamespace

    from synctalk.audio.sync_data import load_clips
    from synctalk.eval.evaluate import EvaluateOptions, _judges
    from synctalk.io.media import write_wav

    root = make_subject(n_frames=40, size=(64, 64))
    t = np.arange(int(40 / 25 * 16000)) / 16000
    write_wav(root / "audio.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0))
              .astype(np.float32))
    avatar = SimpleNamespace(ds=SimpleNamespace(root=root))
    judges, skipped = _judges(avatar, EvaluateOptions(), "cpu")
    assert "" not in judges and "no sync judge" in skipped["lse"]
    argv = _command(skipped["lse"], "Train one with")
    assert argv[:2] == ["sync-train", str(root)] and "--before-validation" in argv
    assert main(argv + ["--steps", "1", "sync.width=0.125", "sync.batch_size=4", "-q"]) == 0
    judges, skipped = _judges(avatar, EvaluateOptions(), "cpu")
    assert "" in judges and "lse" not in skipped
    whole, = load_clips([root])
    before, = load_clips([root], before_validation=True)
    assert before.centres.max() < 38 <= whole.centres.max() + 2   # frames 38 and 39 are the validation split
    assert len(before.centres) < len(whole.centres)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
