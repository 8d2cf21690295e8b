"""Bad inputs to train / render / stream / demo and the numeric flags of every command (issue 21), tried as a new
user would: each case exits with the documented code, a message that names the problem and the fix, and leaves
every file that was there before unchanged (checksums before and after)."""

from __future__ import annotations

import builtins
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import checksums, speech_like, tiny_train_config
from conftest import run_cli as run

from synctalk.cli import main as cli_main


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    from synctalk.io.media import write_wav

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    write_wav(path, speech_like(0.4, seed=3))
    return path


# ------------------------------------------------------------------------------------------ full disk
def test_full_disk_at_a_checkpoint_names_the_path_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from synctalk.errors import DiskFullError
    from synctalk.train import checkpoint

    manager = checkpoint.CheckpointManager(tmp_path / "ckpt")
    manager.save(1, {"w": torch.ones(1000)})
    before = checksums(tmp_path)
    # every file the checkpoint module opens is /dev/full: the kernel answers ENOSPC like a full disk
    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r": builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(DiskFullError) as info:
        manager.save(2, {"w": torch.zeros(1000)})
    message = str(info.value)
    assert f"disk full at {manager.path(2)}" in message and "MB free" in message and "Free some space" in message
    assert checksums(tmp_path) == before  # no partial file, the old checkpoint intact
    assert manager.load_latest()["step"] == 1


def test_full_disk_while_encoding_a_render_says_so_and_keeps_the_old_video(trained_workspace, speech_wav, tmp_path,
                                                                           monkeypatch, capsys):
    import synctalk.io.media as media

    workspace, subject = trained_workspace
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier render")
    before = checksums(tmp_path, workspace, subject)

    def onto_full_disk(path: Path) -> Path:  # ffmpeg's temporary output is /dev/full: every write is ENOSPC
        link = path.parent / f".{path.stem}.full{path.suffix}"
        link.symlink_to("/dev/full")
        return link

    monkeypatch.setattr(media, "temp_path_beside", onto_full_disk)
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", out, "--size", "16"], capsys)
    assert code == 1 and f"disk full at {out}" in err and "Free some space" in err
    assert "internal error" not in err
    assert checksums(tmp_path, workspace, subject) == before


def test_full_disk_at_a_training_checkpoint_stops_with_the_path(make_subject, tmp_path, monkeypatch, capsys):
    from synctalk.train import checkpoint

    subject = make_subject()
    before = checksums(subject)
    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r": builtins.open("/dev/full", mode), raising=False)
    config = tmp_path / "tiny.yaml"
    _write_tiny_config(config)
    code, _, err = run(["train", subject, "-w", tmp_path / "ws", "--config", config, "--stages", "head", "-q"],
                       capsys)
    assert code == 1 and "disk full at" in err and "ckpt_" in err and "internal error" not in err
    assert checksums(subject) == before


def _write_tiny_config(path: Path, **overrides) -> Path:
    from synctalk.config import save_config

    save_config(tiny_train_config(**overrides), path.parent, path.name)
    return path


# ------------------------------------------------------------------------------------------ outputs, before work
@pytest.fixture
def no_loading(monkeypatch):
    """Loading a workspace fails the test: the bad output must be refused before any work."""
    from synctalk.inference.avatar import Avatar

    def loaded(*args, **kwargs):
        raise AssertionError("the workspace was loaded before the output was checked")

    monkeypatch.setattr(Avatar, "load", loaded)


@pytest.mark.parametrize("case", ["suffix", "folder", "parent_is_file", "unwritable"])
def test_render_refuses_an_output_it_cannot_write_before_rendering(case, trained_workspace, speech_wav, tmp_path,
                                                                  no_loading, request, capsys):
    workspace, subject = trained_workspace
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("mine")
    out, expected = {
        "suffix": (tmp_path / "out.avi", "must be a .mp4 file (e.g. -o out.mp4)"),
        "folder": (tmp_path / "a_folder", "is a folder; -o takes a file name for the output video"),
        "parent_is_file": (tmp_path / "a_file" / "out.mp4", "a_file is a file, not a folder"),
        "unwritable": (None, "cannot write the output video"),
    }[case]
    if out is None:
        out = request.getfixturevalue("unwritable_dir") / "out.mp4"
    before = checksums(tmp_path, workspace, subject)
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", out], capsys)
    assert code == 2 and expected in err, err
    assert "choose" in err or "e.g." in err  # the fix
    assert checksums(tmp_path, workspace, subject) == before


def test_render_refuses_to_overwrite_its_own_input(tmp_path):
    from synctalk.errors import UserInputError
    from synctalk.io.outputs import check_output_file

    speech = tmp_path / "speech.mp4"
    speech.write_bytes(b"the user's recording")
    with pytest.raises(UserInputError, match="is also an input of this command and would be overwritten"):
        check_output_file(speech, "output video", suffixes=(".mp4",), inputs=[speech])
    assert speech.read_bytes() == b"the user's recording"


def test_render_source_without_portrait_or_missing_is_refused(trained_workspace, speech_wav, tmp_path, no_loading,
                                                              capsys):
    workspace, subject = trained_workspace
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", tmp_path / "o.mp4", "--source",
                        subject.parent / "original.mp4"], capsys)
    assert code == 2 and "add --portrait, or leave --source out" in err
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", tmp_path / "o.mp4", "--portrait",
                        "--source", tmp_path / "gone.mp4"], capsys)
    assert code == 2 and "no such video file" in err
    assert not any(tmp_path.iterdir())


def test_stream_refuses_bad_outputs_before_loading(trained_workspace, speech_wav, tmp_path, no_loading,
                                                   unwritable_dir, capsys):
    workspace, _ = trained_workspace
    (tmp_path / "a_folder").mkdir()
    code, _, err = run(["stream", workspace, "--audio", speech_wav, "-o", tmp_path / "a_folder"], capsys)
    assert code == 2 and "is a folder" in err
    code, _, err = run(["stream", workspace, "--audio", speech_wav, "-o", unwritable_dir / "frames.rgb"], capsys)
    assert code == 2 and "cannot write the stream output" in err
    code, _, err = run(["stream", workspace, "--audio", speech_wav, "-o", speech_wav], capsys)
    assert code == 2 and "is also an input" in err


@pytest.mark.parametrize("case", ["file", "foreign", "unwritable"])
def test_train_refuses_a_workspace_it_must_not_or_cannot_write(case, make_subject, tmp_path, request, capsys):
    subject = make_subject()
    foreign = tmp_path / "my_project"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("my: own settings\n")
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "a_file").write_text("mine")
    workspace, expected = {
        "file": (tmp_path / "a_file", "is a file, not a folder; -w takes a folder: a new or empty one, or a "
                                      "workspace made before"),
        "foreign": (foreign, "holds files that synctalk did not write (config.yaml, notes.txt), so it is not a "
                             "workspace to resume; give a new or empty folder with -w"),
        "unwritable": (None, "cannot write the workspace"),
    }[case]
    if workspace is None:
        workspace = request.getfixturevalue("unwritable_dir") / "ws"
    before = checksums(tmp_path)
    code, _, err = run(["train", subject, "-w", workspace, "-q"], capsys)
    assert code == 2 and expected in err, err
    assert checksums(tmp_path) == before


def test_train_refuses_negative_steps_and_an_untrained_head(make_subject, tmp_path, capsys):
    subject = make_subject()
    before = checksums(tmp_path)
    code, _, err = run(["train", subject, "-w", tmp_path / "ws", "train.head_steps=-5"], capsys)
    assert code == 2 and "'train.head_steps' must be >= 0, got -5; set it with train.head_steps=VALUE" in err
    for argv in (["train.head_steps=0"], ["--stages", "torso", "mouth"]):
        code, _, err = run(["train", subject, "-w", tmp_path / "ws", *argv], capsys)
        assert code == 2 and "need a trained head" in err and "has no head checkpoint" in err, err
        assert "train.head_steps > 0" in err and "--stages mouth" in err
    assert checksums(tmp_path) == before and not (tmp_path / "ws").exists()


@pytest.mark.parametrize("case", ["file", "foreign", "unwritable", "seconds"])
def test_demo_refuses_bad_output_folders_and_numbers(case, tmp_path, request, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    (tmp_path / "a_file").write_text("mine")
    out, extra, expected = {
        "file": (tmp_path / "a_file", [], "is a file, not a folder; -o takes a folder: a new or empty one"),
        "foreign": (foreign, [], "holds files that synctalk did not write (holiday.jpg)"),
        "unwritable": (None, [], "cannot write the demo folder"),
        "seconds": (tmp_path / "demo", ["demo.seconds=0"], "'demo.seconds' must be > 0, got 0"),
    }[case]
    if out is None:
        out = request.getfixturevalue("unwritable_dir") / "demo"
    before = checksums(tmp_path)
    code, _, err = run(["demo", "-o", out, *extra], capsys)
    assert code == 2 and expected in err, err
    assert checksums(tmp_path) == before and not (tmp_path / "demo").exists()


# ------------------------------------------------------------------------------------------ numbers on the CLI
BAD_FLAGS = [
    (["render", "WS", "--audio", "A.wav", "-o", "o.mp4"], "--size", ["-8", "0", "abc"], ["not positive",
                                                                                       "not a whole number"]),
    (["render", "WS", "--audio", "A.wav", "-o", "o.mp4"], "--still-frame", ["-1"], ["negative"]),
    (["render", "WS", "--audio", "A.wav", "-o", "o.mp4"], "--mouth-gain", ["0", "-2", "nan"], ["not positive",
                                                                                              "not a finite"]),
    (["stream", "WS", "--audio", "A.wav", "-o", "-"], "--rate", ["0", "-16000", "16k"], ["not positive",
                                                                                       "not a whole number"]),
    (["stream", "WS", "--audio", "A.wav", "-o", "-"], "--chunk", ["0", "-0.2", "inf"], ["not positive",
                                                                                      "not a finite"]),
    (["stream", "WS", "--audio", "A.wav", "-o", "-"], "--size", ["0"], ["not positive"]),
    (["stream", "WS", "--audio", "A.wav", "-o", "-"], "--mouth-gain", ["0"], ["not positive"]),
    (["audio-inspect", "A.wav"], "--fps", ["0", "-25"], ["not positive"]),
    (["sync-score", "V.mp4", "--model", "m.pt"], "--max-offset", ["-1"], ["negative"]),
    (["sync-score", "V.mp4", "--model", "m.pt"], "--start", ["-1"], ["negative"]),
    (["sync-score", "V.mp4", "--model", "m.pt"], "--end", ["0"], ["not positive"]),
    (["sync-train", "S", "-o", "s.pt"], "--steps", ["0", "-3"], ["not positive"]),
    (["sync-train", "S", "-o", "s.pt"], "--minutes", ["-1"], ["negative"]),
    (["ablate", "S", "-o", "out"], "--max-frames", ["0"], ["not positive"]),
    (["train", "S", "-w", "ws"], "--seed", ["-1", str(2 ** 32)], ["negative", "too large for a seed"]),
    (["inspect", "S"], "--seed", ["-1"], ["negative"]),
]


@pytest.mark.parametrize("argv, flag, values, messages", BAD_FLAGS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_numbers_are_refused_when_parsed(argv, flag, values, messages, capsys):
    for value in values:
        with pytest.raises(SystemExit) as info:
            cli_main.main([*argv, flag, value])
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"argument {flag}" in err, err
        assert any(message in err for message in messages), err


def test_ablate_budget_is_refused_before_any_variant_runs(make_subject, tmp_path, capsys):
    subject = make_subject()
    for budget in ("0", "-1", "nan"):   # checked by the library (synctalk.eval.ablate.scale_schedule)
        code, _, err = run(["ablate", subject, "-o", tmp_path / "out", "--budget", budget], capsys)
        assert code == 2 and "--budget must be a number > 0" in err, err
    assert not (tmp_path / "out").exists()


def test_sync_score_end_before_start_is_refused(tmp_path, capsys):
    code, _, err = run(["sync-score", tmp_path / "v.mp4", "--model", tmp_path / "m.pt", "--start", "2", "--end",
                        "1"], capsys)
    assert code == 2 and "--end 1 is not after --start 2" in err


def test_config_numbers_are_range_checked_with_the_key():
    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.errors import ConfigError

    for override, message in [("train.rays=0", "'train.rays' must be >= 1, got 0"),
                              ("train.ema_decay=1", "'train.ema_decay' must be >= 0 and < 1, got 1.0"),
                              ("train.lr_mlp=-1e-3", "'train.lr_mlp' must be > 0"),
                              ("sync.batch_size=1", "'sync.batch_size' must be >= 2"),
                              ("seed=-3", "'seed' must be >= 0 and < 4294967296, got -3")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(SyncTalkConfig, None, [override])
    for recipe in ("default", "cpu", "demo"):  # the shipped recipes are in range
        load_config(SyncTalkConfig, recipe)


# ------------------------------------------------------------------------------------------ accepted silently
def test_portrait_source_is_honoured_when_the_frame_cache_came_from_another_video(trained_workspace, tmp_path,
                                                                                  caplog):
    from synctalk.data import SubjectDataset
    from synctalk.data.source import SourceFrames
    from synctalk.io.media import read_frames, write_video

    _, subject = trained_workspace
    ds = SubjectDataset(subject)
    original = Path(ds.meta["source"]["path"])
    cache = tmp_path / "source"
    SourceFrames(ds, cache).ensure(progress=False)
    first = SourceFrames(ds, cache)[0]

    moved = tmp_path / "moved.mp4"   # the same file somewhere else (size and mtime kept): the cache stays
    shutil.copy2(original, moved)
    before = checksums(cache)
    assert np.array_equal(SourceFrames(ds, cache, moved)[0], first) and checksums(cache) == before

    other = tmp_path / "other.mp4"   # another video of the same size: its frames are extracted and used
    write_video(other, [255 - frame for frame in read_frames(original)], ds.fps)
    with caplog.at_level(logging.INFO, logger="synctalk"):
        frames = SourceFrames(ds, cache, other)
        frames.ensure(progress=False)
    assert "extracting the original frames again from --source" in caplog.text
    assert np.abs(frames[0].astype(int) - (255 - first.astype(int))).mean() < 20


def test_half_trained_workspace_renders_with_a_warning_whose_command_finishes_it(trained_workspace, speech_wav,
                                                                                 tmp_path, capsys):
    import shlex

    import torch

    from synctalk.train.trainer import train

    _, subject = trained_workspace
    workspace = tmp_path / "ws"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(subject, workspace, tiny_train_config(), progress=False, stages=("head", "lips"))
        code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", tmp_path / "a.mp4", "--size", "16"],
                           capsys)
        assert code == 0 and "WARNING" in err and "training is not finished" in err, err
        assert "torso not started" in err and "mouth not started" in err and "portrait not started" in err
        command = shlex.split(err.split("Finish it with: ")[1].splitlines()[0])
        assert command[:2] == ["synctalk", "train"]
        subject_before = checksums(subject)
        code, _, err = run(command[1:], capsys)   # the hint, run as given: trains the rest, with progress
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    for what in ("train torso", "torso: mean torso", "mouth: footage crops", "train mouth", "source frames",
                 "portrait: render and paste back", "train portrait"):
        assert f"INFO: {what}" in err, (what, err)
    assert checksums(subject) == subject_before
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", tmp_path / "b.mp4", "--size", "16"], capsys)
    assert code == 0 and "not finished" not in err


def test_full_disk_while_streaming_raw_frames_says_so(trained_workspace, speech_wav, tmp_path, capsys):
    workspace, subject = trained_workspace
    out = tmp_path / "frames.rgb"
    out.symlink_to("/dev/full")   # every write is ENOSPC, as on a full disk
    before = checksums(workspace, subject)
    code, _, err = run(["stream", workspace, "--audio", speech_wav, "-o", out, "--as-fast-as-possible", "--size",
                        "8", "-q"], capsys)
    assert code == 1 and f"disk full at {out}" in err and "internal error" not in err, err
    assert checksums(workspace, subject) == before


def test_render_frames_dir_of_other_files_is_refused(trained_workspace, speech_wav, tmp_path, no_loading, capsys):
    workspace, _ = trained_workspace
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "000000.png").write_bytes(b"a frame of a previous render")
    (photos / "me.png").write_bytes(b"the user's photo")
    before = checksums(tmp_path)
    code, _, err = run(["render", workspace, "--audio", speech_wav, "-o", tmp_path / "o.mp4", "--frames-dir", photos],
                       capsys)
    assert code == 2 and "holds files that synctalk did not write (000000.png, me.png)" in err
    assert "give a new or empty folder with --frames-dir" in err
    assert checksums(tmp_path) == before
