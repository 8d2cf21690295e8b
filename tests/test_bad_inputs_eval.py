"""Bad inputs to `synctalk evaluate` (issue 21), tried as a new user would: each case exits with the documented
code and a message that names the problem and the fix, writes what it could compute, and leaves every file that was
there before unchanged (checksums before and after)."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import checksums
from conftest import run_cli as run

from synctalk.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def inputs(trained_workspace):
    """The session's trained workspace and its subject, with their checksums now (compare after the command)."""
    workspace, subject = trained_workspace
    return workspace, subject, checksums(workspace, subject)


@pytest.mark.usefixtures("landmarker_model")
def test_no_face_in_the_render_still_writes_every_other_metric(inputs, tmp_path, capsys, monkeypatch):
    """A sync judge that finds no face (32 px noise) used to stop evaluate before metrics.json: PSNR and SSIM were
    lost. Now the lip-sync scores are skipped with the judge's reason and the rest is written, exit 0."""
    import torch

    from synctalk.audio.sync_model import SyncModel, SyncModelConfig, save_sync_model

    monkeypatch.setenv("SYNCTALK_HOME", str(tmp_path / "home"))   # the judge's clip cache
    workspace, subject, before = inputs
    judge = tmp_path / "judge.pt"
    torch.manual_seed(0)
    save_sync_model(SyncModel(SyncModelConfig(audio_width=0.125, visual_width=0.125)), judge)
    report = tmp_path / "report"
    code, out, err = run(["evaluate", workspace, "-o", report, "--max-frames", 2, "--sync-model", judge, "-q"],
                         capsys)
    assert code == 0, err
    saved = json.loads((report / "metrics.json").read_text())
    row = saved["rows"]["render"]
    assert row["psnr"] > 0 and 0 < row["ssim"] <= 1 and "lse_d" not in row
    for name in ("lse (render)", "lse (ground truth)"):
        assert "no face" in saved["skipped"][name] or "no 5-frame window" in saved["skipped"][name]
    assert "LSE-D / LSE-C / offset of the render frames skipped" in (report / "metrics.md").read_text()
    assert checksums(workspace, subject) == before


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_frames_zero_is_refused_not_taken_as_all(inputs, tmp_path, capsys, value):
    workspace, subject, before = inputs
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["evaluate", str(workspace), "-o", str(tmp_path / "r"), "--max-frames", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--max-frames" in err and "leave --max-frames out to evaluate every frame" in err
    assert not (tmp_path / "r").exists() and checksums(workspace, subject) == before


def test_max_frames_zero_through_the_library_is_refused_before_anything_is_written(inputs, tmp_path):
    from synctalk.errors import UserInputError
    from synctalk.eval.evaluate import EvaluateOptions, evaluate

    workspace, subject, before = inputs
    with pytest.raises(UserInputError, match="leave --max-frames out to evaluate every frame"):
        evaluate(workspace, tmp_path / "r", EvaluateOptions(max_frames=0), progress=False)
    assert not (tmp_path / "r").exists() and checksums(workspace, subject) == before


def test_a_missing_workspace_leaves_no_report_folder(tmp_path, capsys):
    report = tmp_path / "reports" / "run1"
    code, _, err = run(["evaluate", tmp_path / "no-such-workspace", "-o", report], capsys)
    assert code == 2
    assert "no-such-workspace" in err and "not a trained workspace" in err and "synctalk train" in err
    assert not (tmp_path / "reports").exists()


def test_a_missing_audio_file_is_refused_before_the_render(inputs, tmp_path, capsys):
    workspace, subject, before = inputs
    code, _, err = run(["evaluate", workspace, "-o", tmp_path / "r", "--audio", tmp_path / "speech.wav"], capsys)
    assert code == 2 and "speech.wav: no such audio file" in err and "--audio" in err
    assert not (tmp_path / "r").exists() and checksums(workspace, subject) == before


def test_a_report_path_that_is_a_file_is_refused_and_the_file_kept(inputs, tmp_path, capsys):
    workspace, subject, before = inputs
    existing = tmp_path / "notes.txt"
    existing.write_text("my notes")
    code, _, err = run(["evaluate", workspace, "-o", existing], capsys)
    assert code == 2 and "notes.txt: is a file, not a folder" in err and "-o takes a folder" in err
    code, _, err = run(["evaluate", workspace, "-o", existing / "report"], capsys)
    assert code == 2 and "is a file, not a folder" in err and "-o" in err
    assert existing.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert checksums(workspace, subject) == before


def test_a_folder_of_someone_elses_files_is_not_written_into(inputs, tmp_path, capsys):
    workspace, subject, before = inputs
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "sheet.png").write_bytes(b"my own picture")
    code, _, err = run(["evaluate", workspace, "-o", folder], capsys)
    assert code == 2 and "holds files that synctalk did not write (sheet.png)" in err and "new or empty" in err
    assert checksums(folder) == {str(folder / "sheet.png"): hashlib.sha256(b"my own picture").hexdigest()}
    assert checksums(workspace, subject) == before


def test_an_interrupted_report_is_resumed_not_refused(inputs, tmp_path, capsys):
    from synctalk.eval.evaluate import REPORT_MARK

    workspace, subject, before = inputs
    report = tmp_path / "report"
    report.mkdir()
    (report / REPORT_MARK).touch()                        # what evaluate writes first ...
    (report / "render.mp4").write_bytes(b"half written")  # ... and what a Ctrl-C left
    code, _, err = run(["evaluate", workspace, "-o", report, "--max-frames", "1", "--size", "16"], capsys)
    assert code == 0, err
    assert (report / "metrics.json").is_file() and (report / "render.mp4").read_bytes() != b"half written"
    assert checksums(workspace, subject) == before


def test_an_unwritable_report_folder_is_refused_before_the_work(inputs, unwritable_dir, capsys, monkeypatch):
    """Checked before any rendering: the render must not run (it would be thrown away)."""
    from synctalk.eval import evaluate as E

    workspace, subject, before = inputs

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although the report cannot be written")

    monkeypatch.setattr(E, "render_split", no_render)
    code, _, err = run(["evaluate", workspace, "-o", unwritable_dir / "report"], capsys)
    assert code == 2 and "cannot write the report folder" in err and "choose a folder you can write to" in err
    assert not (unwritable_dir / "report").exists()
    assert checksums(workspace, subject) == before


@pytest.mark.usefixtures("landmarker_model")
def test_a_report_made_before_is_refreshed_in_place(inputs, tmp_path, capsys):
    """The folder of an earlier report is ours: evaluate writes over its metrics (and nothing else there)."""
    workspace, subject, before = inputs
    report = tmp_path / "report"
    assert run(["evaluate", workspace, "-o", report, "--max-frames", 1, "-q"], capsys)[0] == 0
    (report / "notes.md").write_text("kept")
    assert run(["evaluate", workspace, "-o", report, "--max-frames", 2, "-q"], capsys)[0] == 0
    assert json.loads((report / "metrics.json").read_text())["frames"] == 2
    assert (report / "notes.md").read_text() == "kept" and checksums(workspace, subject) == before
