"""`synctalk evaluate`: report files, the GT row, skipped reasons, provenance, --compare."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.usefixtures("landmarker_model")
def test_evaluate_writes_metrics_with_reasons_for_what_it_skips(trained_workspace, tmp_path):
    from synctalk.eval import metrics as M
    from synctalk.eval.evaluate import EvaluateOptions, evaluate, render_split
    from synctalk.inference.avatar import Avatar

    workspace, subject = trained_workspace
    result = evaluate(workspace, tmp_path / "report", EvaluateOptions(max_frames=2), progress=False)
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["rows"]["render"]["psnr"] == pytest.approx(result["rows"]["render"]["psnr"])
    assert saved["frames"] == 2 and saved["resolution"] == [32, 32] and len(saved["per_frame"]["psnr"]) == 2
    # the PSNR is the mean over frames of the self-driven render against the real frame
    avatar = Avatar.load(workspace)
    frames = avatar.ds.split("val")[:2]
    preds, _ = render_split(avatar, frames)
    expected = np.mean([M.psnr(p, avatar.ds.image(f)) for p, f in zip(preds, frames, strict=True)])
    assert saved["rows"]["render"]["psnr"] == pytest.approx(expected)
    # no sync judge, FID not computed, no face on 32 px noise: each listed with its reason, no value
    for name, words in (("lse", "sync.pt"), ("fid", "does not compute"), ("lmd", "no face")):
        assert words in saved["skipped"][name]
    assert "lse_d" not in saved["rows"]["render"]
    # LPIPS of the frame and of the face box (the subject's landmarks), the GT row's frames against themselves
    from synctalk import assets

    if assets.is_available("lpips_alex"):
        score = M.lpips_metric()
        expected = np.mean([score(p, avatar.ds.image(f)) for p, f in zip(preds, frames, strict=True)])
        assert saved["rows"]["render"]["lpips"] == pytest.approx(expected) and expected > 0
        assert saved["rows"]["render"]["lpips_face"] > 0 and len(saved["per_frame"]["lpips"]) == 2
        assert saved["rows"]["ground truth"]["lpips"] == saved["rows"]["ground truth"]["lpips_face"] == 0
        assert "lpips" not in saved["skipped"] and "LPIPS ↓" in (tmp_path / "report" / "metrics.md").read_text()
    else:
        assert "synctalk assets fetch lpips_alex" in saved["skipped"]["lpips"]
        assert "lpips" not in saved["rows"]["render"]
    assert saved["provenance"]["dataset_hash"] and saved["provenance"]["hardware"]["cpu_count"] >= 1
    assert saved["provenance"]["config"]["train"]["head_steps"] == 4
    table = (tmp_path / "report" / "metrics.md").read_text()
    assert "| ground truth |" in table and "Skipped:" in table and "AUE stand-in" in table
    from synctalk.io.images import read_image

    assert read_image(tmp_path / "report" / "sheet.png").shape == (2 * 32, 3 * 32, 3)


@pytest.mark.usefixtures("landmarker_model")
def test_silent_control_and_compare(trained_workspace, tmp_path):
    from synctalk.eval.evaluate import EvaluateOptions, compare, evaluate

    workspace, _ = trained_workspace
    own = evaluate(workspace, tmp_path / "own", EvaluateOptions(max_frames=2), progress=False)
    silent = evaluate(workspace, tmp_path / "silent", EvaluateOptions(max_frames=2, silent=True), progress=False)
    assert silent["silent"] and not own["silent"]
    assert silent["rows"]["render"]["psnr"] != own["rows"]["render"]["psnr"]   # the audio reaches the pixels
    diff = compare(tmp_path / "own", tmp_path / "silent")
    row = next(line for line in diff.splitlines() if line.startswith("| render: PSNR"))
    a, b, delta = (float(x) for x in row.split("|")[2:5])
    assert delta == pytest.approx(b - a, abs=0.02)


@pytest.mark.usefixtures("landmarker_model")
def test_evaluate_cli_and_errors(trained_workspace, tmp_path, capsys):
    from synctalk.cli.main import main

    workspace, _ = trained_workspace
    assert main(["evaluate", str(workspace), "-o", str(tmp_path / "r"), "--max-frames", "1", "-q"]) == 0
    assert "| render |" in capsys.readouterr().out
    assert main(["evaluate", "--compare", str(tmp_path / "r"), str(tmp_path / "missing")]) == 2
    assert main(["evaluate", str(workspace)]) == 2


def test_delayed_audio_scores_a_worse_lse_d_on_a_real_clip(tmp_path, monkeypatch):
    """LSE-D of a real talking clip rises when its audio is delayed (a judge fitted on that clip, briefly)."""
    from conftest import real_file

    from synctalk.audio.score import score_clip
    from synctalk.audio.sync_data import clip_from_video
    from synctalk.audio.sync_model import load_sync_model
    from synctalk.audio.sync_train import train_sync_model
    from synctalk.config import SyncTrainConfig

    video = real_file("video/may_5s_25fps.mp4")
    real_file("models/face_landmarker.task")
    monkeypatch.setenv("SYNCTALK_HOME", str(tmp_path / "home"))
    clip = clip_from_video(video)
    cfg = SyncTrainConfig(width=0.125, batch_size=16, max_steps=120, eval_every=1000)
    train_sync_model([clip], tmp_path / "judge.pt", cfg, progress=False)
    judge = load_sync_model(tmp_path / "judge.pt")
    aligned = score_clip(judge, clip, max_offset=6)
    delayed = score_clip(judge, clip.delayed(4), max_offset=6)
    assert aligned.offset == 0 and delayed.offset == -4
    at_zero = lambda score: score.curve[list(score.offsets).index(0)]  # noqa: E731
    assert at_zero(delayed) > at_zero(aligned)
    # with the search narrower than the delay, LSE-D (the best distance found) is worse too
    assert score_clip(judge, clip.delayed(4), max_offset=2).lse_d > score_clip(judge, clip, max_offset=2).lse_d


@pytest.mark.usefixtures("landmarker_model")
def test_portrait_evaluation_compares_paste_back_with_the_plain_render(trained_workspace, tmp_path):
    from synctalk.eval.evaluate import EvaluateOptions, evaluate

    workspace, _ = trained_workspace
    result = evaluate(workspace, tmp_path / "p", EvaluateOptions(max_frames=2, portrait=True), progress=False)
    row = result["rows"]["render"]
    assert result["resolution"] == [48, 48]
    assert np.isfinite(row["psnr_crop_portrait"]) and np.isfinite(row["psnr_crop_plain"])


@pytest.mark.usefixtures("landmarker_model")
def test_size_renders_and_scores_at_n_and_compare_warns_across_sizes(trained_workspace, tmp_path):
    """--size 16 on the 32 px subject: renders, truth (area-resized), sheet and metrics.json all at 16 px; the
    default report and this one differ in size, which --compare says."""
    import cv2

    from synctalk.eval import metrics as M
    from synctalk.eval.evaluate import EvaluateOptions, compare, evaluate, render_split
    from synctalk.inference.avatar import Avatar
    from synctalk.io.images import read_image

    workspace, _ = trained_workspace
    small = evaluate(workspace, tmp_path / "s16", EvaluateOptions(max_frames=2, size=16), progress=False)
    saved = json.loads((tmp_path / "s16" / "metrics.json").read_text())
    assert saved["size"] == small["size"] == 16 and saved["resolution"] == [16, 16]
    assert read_image(tmp_path / "s16" / "sheet.png").shape == (2 * 16, 3 * 16, 3)
    assert "at 16x16" in (tmp_path / "s16" / "metrics.md").read_text()
    avatar = Avatar.load(workspace)
    frames = avatar.ds.split("val")[:2]
    preds, _ = render_split(avatar, frames, size=16)
    assert preds[0].shape == (16, 16, 3)
    truth = [cv2.resize(avatar.ds.image(f), (16, 16), interpolation=cv2.INTER_AREA) for f in frames]
    expected = np.mean([M.psnr(p, g) for p, g in zip(preds, truth, strict=True)])
    assert saved["rows"]["render"]["psnr"] == pytest.approx(expected)

    full = evaluate(workspace, tmp_path / "full", EvaluateOptions(max_frames=2), progress=False)
    assert full["size"] == 32 and full["resolution"] == [32, 32]
    diff = compare(tmp_path / "full", tmp_path / "s16")
    assert "WARNING: the reports were made at different sizes (32x32 vs 16x16)" in diff
    assert "different sizes" not in compare(tmp_path / "s16", tmp_path / "s16")


@pytest.mark.parametrize("size", [0, -8, 2.5, True])
def test_a_bad_size_is_refused_before_anything_is_written(trained_workspace, tmp_path, size):
    from synctalk.errors import UserInputError
    from synctalk.eval.evaluate import EvaluateOptions, evaluate

    workspace, _ = trained_workspace
    with pytest.raises(UserInputError, match="positive whole number of pixels"):
        evaluate(workspace, tmp_path / "r", EvaluateOptions(size=size), progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.usefixtures("landmarker_model")
def test_cli_size_is_range_checked_at_parse_time_and_progress_reaches_a_log(trained_workspace, tmp_path, capsys):
    """`synctalk evaluate ... --size N 2> log`: off a terminal the render's progress is plain log lines."""
    from synctalk.cli.main import main

    workspace, _ = trained_workspace
    for bad, words in (("0", "0 is not positive"), ("-8", "-8 is not positive"), ("big", "'big' is not a whole")):
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", str(workspace), "-o", str(tmp_path / "bad"), "--size", bad])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["evaluate", str(workspace), "-o", str(tmp_path / "r"), "--max-frames", "1", "--size", "16"]) == 0
    out = capsys.readouterr()
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["size"] == 16
    assert "INFO: evaluate: render 0/1 frame (0.0%), starting" in out.err
    assert "INFO: evaluate: render 1/1 frame (100.0%), " in out.err and ", done" in out.err
