"""Issue 21, the preprocess cases: the subject folder says whose it is, nothing a user made is overwritten, every
repair hint is a command that works (each is run here), the folder is locked, bad numbers and full disks are named,
killed runs leave no temporaries, two faces, a validation split without faces, progress.

One small real subject (1 s, 128 px, mel features: ~5 s) is made once, through the very command the "subject not
found" hint gives; each test works on a copy and checks, with checksums, that a refused run changed nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import real_file

from synctalk.cli.main import main
from synctalk.data import TRAIN_STEPS, SubjectDataset
from synctalk.errors import DatasetError

FAST = {"preprocess": {"qa": False, "size": 128, "background_samples": 10, "pose_iterations": 50,
                       "pose_track_points": 0, "workers": 1},
        "audio": {"backend": "mel"}}


def checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path → sha256 of its content)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out + err


def hinted_command(message: str) -> list[str]:
    """The command in a message's backticks, as argv for synctalk.cli.main (without the leading `synctalk`)."""
    commands = re.findall(r"`(synctalk [^`]+)`", message)
    assert len(commands) == 1, message
    return shlex.split(commands[0])[1:]


@pytest.fixture(autouse=True)
def restore_logging():
    """synctalk.cli.main sets up the 'synctalk' logger for a terminal (own handler, no propagation); undo it, so
    caplog sees the library's records in the next test. CLI runs are checked on their captured stderr."""
    import logging

    logger = logging.getLogger("synctalk")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(folder with the clip and the fast config, the subject made from them); the subject is made by running
    the hint that SubjectDataset gives for a subject folder that does not exist (with the fast config added)."""
    from synctalk.demo.sample import make_sample_clip
    from synctalk.io.media import write_video, write_wav

    real_file("models/face_landmarker.task")
    root = tmp_path_factory.mktemp("subject_folder")
    clip = make_sample_clip(seconds=1.0, size=128, fps=25.0, seed=4)
    write_wav(root / "speech.wav", clip.audio)
    write_video(root / "clip.mp4", clip.frames, 25.0, audio_path=root / "speech.wav")
    (root / "fast.yaml").write_text(yaml.safe_dump(FAST))
    subject = root / "subject"
    with pytest.raises(DatasetError) as err:
        SubjectDataset(subject)
    assert "subject directory not found; make it with `synctalk preprocess YOUR_VIDEO -o" in str(err.value)
    argv = [str(root / "clip.mp4") if a == "YOUR_VIDEO" else a for a in hinted_command(str(err.value))]
    assert main(argv + ["--config", str(root / "fast.yaml"), "-q"]) == 0
    SubjectDataset(subject, require=TRAIN_STEPS)
    return root, subject


@pytest.fixture
def subject(made, tmp_path):
    """A copy of the module's subject (its manifest and config name the module's clip)."""
    copy = tmp_path / "subject"
    shutil.copytree(made[1], copy)
    return copy


def _other_video(made, tmp_path) -> Path:
    other = tmp_path / "other.mp4"
    other.write_bytes((made[0] / "clip.mp4").read_bytes() + b"\0")  # another file (not the same bytes)
    return other


# ------------------------------------------------------------------------------------------------ 1. whose folder
def test_another_video_or_other_frame_settings_are_refused_before_anything_is_written(made, subject, tmp_path,
                                                                                     capsys):
    before = checksums(subject)
    code, text = cli(["preprocess", _other_video(made, tmp_path), "-o", subject, "--config", made[0] / "fast.yaml"],
                     capsys)
    assert code == 2
    assert f"-o {subject}: this folder holds a subject made from {made[0] / 'clip.mp4'}" in text
    assert "is not the file it was made from" in text and "Nothing was changed" in text
    assert f"-o {subject.parent / 'subject_2'}" in text and "--overwrite" in text
    assert checksums(subject) == before

    for override, key in (("preprocess.size=96", "preprocess.size: 128 in the folder, 96 in this run"),
                          ("preprocess.fps=20", "preprocess.fps: 25.0 in the folder, 20.0 in this run")):
        code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml",
                          override, "--force", "all"], capsys)
        assert code == 2 and key in text and "--overwrite" in text
        assert checksums(subject) == before


def test_overwrite_replaces_the_subject_and_the_rerun_completes(made, subject, capsys):
    """--overwrite with another frame size: every step is redone (none is left stale: before, frames/ was replaced
    and a later step failed on '25 frame images but meta.json says ...' for good). Every long step shows progress."""
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml",
                      "preprocess.size=96", "--overwrite"], capsys)
    assert code == 0, text
    assert "replacing the subject made from" in text and "every step is redone" in text
    ds = SubjectDataset(subject, require=TRAIN_STEPS)
    assert (ds.width, ds.height) == (96, 96) and ds.image(0).shape == (96, 96, 3)
    manifest = json.loads((subject / "manifest.json").read_text())
    assert manifest["settings"]["preprocess.size"] == 96
    assert not (subject / ".synctalk.lock").exists()
    # 10. progress: the face search, every per-frame step and the pose fit report how far they are
    lines = [line.removeprefix("INFO: ") for line in text.splitlines()]
    for what in ("frames: face search 0/", "frames 0/25", "landmarks 0/25", "parsing 0/25", "gt frames 0/25",
                 "torso plates 0/25", "torso track 0/25", "pose: bundle adjustment 0/"):
        assert any(line.startswith(what) for line in lines), what


def test_a_folder_of_the_users_own_files_is_never_written_into(made, tmp_path, capsys):
    mine = tmp_path / "my files"
    mine.mkdir()
    (mine / "audio.wav").write_bytes(b"my recording")
    (mine / "frames").mkdir()
    (mine / "frames" / "000000.jpg").write_bytes(b"my picture")
    before = checksums(mine)
    for extra in ([], ["--overwrite"]):
        code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", mine, "--config", made[0] / "fast.yaml",
                          *extra], capsys)
        assert code == 2
        assert f"-o {mine}: this folder is not empty (audio.wav, frames/) and is not a synctalk subject folder" in text
        assert f"give a new folder, e.g. -o {tmp_path / 'my files_2'}" in text
        assert checksums(mine) == before and sorted(p.name for p in mine.iterdir()) == ["audio.wav", "frames"]


# ------------------------------------------------------------------------------------------- 3. unusable -o paths
def test_output_that_is_a_file_or_cannot_be_written_fails_before_work(made, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", notes], capsys)
    assert code == 2 and f"-o {notes}: is a file, not a folder" in text and f"-o {tmp_path / 'notes_subject'}" in text
    assert notes.read_text() == "mine"
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", notes / "subject"], capsys)
    assert code == 2 and f"{notes} is a file, not a folder" in text
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", locked / "subject"], capsys)
        finally:
            locked.chmod(0o700)
        assert code == 2 and "cannot write the subject folder" in text and "choose a folder you can write" in text
    elif Path("/sys/kernel").is_dir():  # root writes anywhere, except on a read-only file system such as sysfs
        code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", "/sys/kernel/synctalk_subject"], capsys)
        assert code == 2 and "cannot write the subject folder" in text and "choose a folder you can write" in text


# --------------------------------------------------------------------------------- 2. every repair hint is run
def _run_hint(message: str, capsys) -> None:
    code, text = cli(hinted_command(message) + ["-q"], capsys)
    assert code == 0, text


def test_repair_hints_are_commands_that_work(made, subject, capsys):
    # a file of a finished step deleted: the plain command redoes that step (before: it failed the same way)
    (subject / "poses.npy").unlink()
    with pytest.raises(DatasetError) as err:
        SubjectDataset(subject, require=TRAIN_STEPS)
    message = str(err.value)
    assert "poses.npy: missing (meta.json says step 'pose' finished); repair it with `synctalk preprocess " \
           f"{made[0] / 'clip.mp4'} -o {subject} --config {subject / 'config.yaml'} --force pose`" in message
    _run_hint(message, capsys)
    SubjectDataset(subject, require=TRAIN_STEPS)

    # a frame image missing from a per-frame folder
    (subject / "parsing" / "000007.png").unlink()
    with pytest.raises(DatasetError, match="24 frame images but meta.json says n_frames=25") as err:
        SubjectDataset(subject, require=TRAIN_STEPS)
    assert "--force parsing`" in str(err.value)
    _run_hint(str(err.value), capsys)
    assert SubjectDataset(subject, require=TRAIN_STEPS).parsing(7).shape == (128, 128)

    # portrait paste-back needs the crop that older subjects lack (synctalk.models.portrait)
    from synctalk.models.portrait import Crop

    meta = json.loads((subject / "meta.json").read_text())
    del meta["crop"]
    (subject / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="records no crop") as err:
        Crop.from_meta(SubjectDataset(subject).meta, subject)
    assert "--force frames`" in str(err.value)
    _run_hint(str(err.value), capsys)
    assert Crop.from_meta(SubjectDataset(subject, require=TRAIN_STEPS).meta, subject).side > 0

    # a subject from another synctalk format: --force all
    meta = json.loads((subject / "meta.json").read_text())
    meta["format_version"] = 0
    (subject / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="format_version 0") as err:
        SubjectDataset(subject)
    assert "--force all`" in str(err.value)
    _run_hint(str(err.value), capsys)
    SubjectDataset(subject, require=TRAIN_STEPS)


def test_head_box_hints_name_this_subject(made, subject):
    """synctalk.data.bounds gives the same repair command (for its own step)."""
    from synctalk.data.bounds import head_box

    for i in range(25):
        from synctalk.io.images import write_image

        write_image(subject / "parsing" / f"{i:06d}.png", np.zeros((128, 128), np.uint8))
    with pytest.raises(DatasetError) as err:
        head_box(SubjectDataset(subject, require=TRAIN_STEPS))
    assert f"`synctalk preprocess {made[0] / 'clip.mp4'} -o {subject} --config {subject / 'config.yaml'} " \
           "--force parsing`" in str(err.value)


# ------------------------------------------------------------------------------------------------------ 4. lock
def test_a_second_run_on_the_folder_is_refused_and_names_the_holder(made, subject, capsys):
    from synctalk.io.lock import FolderLock

    before = checksums(subject)
    with FolderLock(subject, "preprocess"):
        code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml"],
                         capsys)
    assert code == 2
    assert f"{subject} is in use by another preprocess run (pid {os.getpid()} on this machine, started " in text
    assert f"kill {os.getpid()}" in text
    assert checksums(subject) == before

    # a lock whose process has died (killed) is stale: taken over with a warning
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (subject / ".synctalk.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                                        "started": 0, "what": "preprocess"}))
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml", "-q"],
                     capsys)
    assert code == 0, text
    assert f"removing a stale lock (preprocess, pid {dead.pid}" in text
    assert not (subject / ".synctalk.lock").exists()

    # another host's lock cannot be checked: say whose it is and how to remove it
    (subject / ".synctalk.lock").write_text(json.dumps({"pid": 1, "host": "render-node-7", "started": 0,
                                                        "what": "preprocess"}))
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml"],
                     capsys)
    assert code == 2 and "pid 1 on host render-node-7" in text and f"delete {subject / '.synctalk.lock'}" in text


# ---------------------------------------------------------------------------------------------- 5. bad numbers
@pytest.mark.parametrize(("override", "expected"), [
    ("preprocess.fps=-5", "'preprocess.fps' must be > 0 and <= 240, got -5.0"),
    ("preprocess.size=0", "'preprocess.size' must be >= 64 and <= 4096, got 0"),
    ("preprocess.val_fraction=1", "'preprocess.val_fraction' must be >= 0 and < 1, got 1.0"),
])
def test_bad_numbers_name_the_key(made, tmp_path, capsys, override, expected):
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", tmp_path / "new", override], capsys)
    assert code == 2 and expected in text and "corrupt" not in text
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------------ 6. disk full
def test_a_full_disk_says_so_where_and_how_much_is_needed(made, subject, capsys, monkeypatch):
    import synctalk.io.images as images

    writes = {"n": 0}
    original = images._write_bytes

    def fill_up(path, data):
        writes["n"] += 1
        if writes["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(path, data)

    monkeypatch.setattr(images, "_write_bytes", fill_up)
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml",
                      "--force", "parsing"], capsys)
    assert code == 1
    assert f"disk full while preprocessing step 'parsing' into {subject} (" in text and "MB free)" in text
    assert re.search(r"roughly \d+ MB of images \(25 frames x \d+ KB x 3 folder\(s\): parsing, gt, torso\)", text)
    assert "could not write image" not in text
    meta = json.loads((subject / "meta.json").read_text())
    assert meta["steps"]["landmarks"]["done"] and "parsing" not in meta["steps"]  # finished steps are kept
    assert not list((subject / "parsing").glob(".*tmp*"))


# ------------------------------------------------------------------------------------------------ 7. leftovers
def test_temporaries_of_a_killed_run_are_removed_by_the_rerun(made, subject, capsys):
    left = [subject / "qa" / ".crop.k3j2x9.tmp.png", subject / ".meta.a8s7d6.tmp.json",
            subject / "frames" / ".000003.q1w2e3.tmp.jpg"]
    for path in left:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half written")
    mine = subject / "qa" / "my notes.txt"  # not a temporary of ours: kept
    mine.write_text("keep")
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml", "-q"],
                     capsys)
    assert code == 0, text
    assert not [p for p in left if p.exists()] and mine.read_text() == "keep"


# ---------------------------------------------------------------------------------------------- 8. two faces
def test_two_faces_the_speaking_one_is_picked_and_the_choice_is_explained(tmp_path, caplog):
    """Two sample faces side by side, the larger one (right) mouthing other speech: auto picks the small one whose
    mouth follows the audio, says so, and how to choose another; preprocess.face=N and largest choose."""
    import cv2

    from preprocess.frames import find_crop
    from synctalk.demo.sample import make_sample_clip
    from synctalk.errors import UserInputError
    from synctalk.io.media import load_speech, probe, write_video, write_wav

    real_file("models/face_landmarker.task")
    speaker = make_sample_clip(seconds=3.0, size=128, fps=25.0, seed=4)
    listener = make_sample_clip(seconds=3.0, size=128, fps=25.0, seed=9)
    frames = []
    for a, b in zip(speaker.frames, listener.frames, strict=True):
        canvas = np.full((200, 400, 3), 90, np.uint8)
        canvas[36:164, 21:149] = a
        canvas[0:200, 200:400] = cv2.resize(b, (200, 200), interpolation=cv2.INTER_CUBIC)
        frames.append(canvas)
    write_wav(tmp_path / "speech.wav", speaker.audio)
    video = write_video(tmp_path / "two.mp4", frames, 25.0, audio_path=tmp_path / "speech.wav")
    info = probe(video)

    def speech():
        return load_speech(video, None, 16000), 16000

    caplog.set_level("WARNING")
    crop, stats = find_crop(video, info, 0.5, 0.2, "auto", speech, progress=False)
    assert stats["faces"] == 2 and stats["face"] == 1 and crop.x0 + crop.side < 200
    assert stats["speaking_scores"][0] > stats["speaking_scores"][1] + 0.15
    assert "2 faces in the clip; the subject is face 1" in caplog.text
    assert "its mouth moves with the speech" in caplog.text and "preprocess.face=N" in caplog.text
    crop, stats = find_crop(video, info, 0.5, 0.2, "largest", speech, progress=False)
    assert stats["face"] == 2 and crop.x0 >= 180
    crop, stats = find_crop(video, info, 0.5, 0.2, 1, speech, progress=False)
    assert stats["face"] == 1
    with pytest.raises(UserInputError, match=r"preprocess.face=3: the clip has 2 face\(s\) \(face 1 \(x "):
        find_crop(video, info, 0.5, 0.2, 3, speech, progress=False)


# -------------------------------------------------------------------------------- 9. validation without faces
def test_validation_split_comes_from_frames_with_a_face(made, subject, capsys):
    flags = np.load(subject / "face_flags.npy")
    flags[-3:] = 0  # the last frames (the validation tail at val_fraction 0.1) have no face
    np.save(subject / "face_flags.npy", flags)
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml",
                      "--force", "splits", "-q"], capsys)
    assert code == 0, text
    splits = json.loads((subject / "splits.json").read_text())
    assert splits["val"] == [20, 21] and splits["train"] == list(range(20))
    assert "have no face: frames 20-21, the last 2 with a face, are the validation split instead" in text


def test_training_without_validation_frames_does_not_call_it_validation(tmp_path, caplog):
    from conftest import build_subject

    from synctalk.models.subject import load_subject
    from synctalk.train.trainer import TrainReport

    root = build_subject(tmp_path / "subject", n_frames=8)
    (root / "splits.json").write_text(json.dumps({"train": list(range(8)), "val": []}))
    caplog.set_level("WARNING")
    data = load_subject(SubjectDataset(root, require=TRAIN_STEPS), "cpu", ("jawOpen",))
    assert data.val_is_train and data.val == [7]
    assert "no validation frames" in caplog.text and "measured on the last training frame" in caplog.text
    line = TrainReport(tmp_path, {"head": {"status": "done", "val_psnr": 20.0, "val_on_train": True}}).lines()[0]
    assert "PSNR on a training frame (no validation frames) 20.00 dB" in line and "validation PSNR" not in line


def test_the_split_rule_the_sync_judge_trains_before():
    """One rule decides the validation frames, for splits.json and for the sync judge trained before them."""
    from preprocess.run import split_frames

    usable = np.ones(10, bool)
    assert split_frames(usable, 0.2) == (list(range(8)), [8, 9])
    usable[7:] = False                                     # the tail has no face: the last faces are held out
    assert split_frames(usable, 0.2) == ([0, 1, 2, 3, 4, 5], [6])
    assert split_frames(np.array([True, False, False]), 0.5) == ([0], [])


def test_two_runs_that_find_the_same_stale_lock_do_not_both_take_the_folder(tmp_path):
    """Run B judged the lock stale, but run A has already replaced it with its own: B must leave A's lock."""
    import json

    from synctalk.io.lock import LOCK_FILENAME, FolderLock

    stale = {"pid": 2 ** 22 + 12345, "host": "elsewhere-or-dead", "what": "preprocess"}
    fresh = {"pid": 1, "host": "here", "what": "preprocess"}
    (tmp_path / LOCK_FILENAME).write_text(json.dumps(fresh))   # A's lock, written after B read the stale one
    FolderLock(tmp_path, "preprocess")._remove_stale(stale)
    assert json.loads((tmp_path / LOCK_FILENAME).read_text()) == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILENAME]
    (tmp_path / LOCK_FILENAME).write_text(json.dumps(stale))   # the stale lock itself is removed
    FolderLock(tmp_path, "preprocess")._remove_stale(stale)
    assert not any(tmp_path.iterdir())


def test_an_unreadable_manifest_falls_back_to_meta_json(made, subject, capsys):
    """A manifest.json cut short by a crash: the folder is still recognised (from meta.json) and the rerun resumes."""
    (subject / "manifest.json").write_text('{"kind": "synctalk-sub')
    code, text = cli(["preprocess", made[0] / "clip.mp4", "-o", subject, "--config", subject / "config.yaml"],
                     capsys)
    assert code == 0, text
    assert json.loads((subject / "manifest.json").read_text())["kind"]
