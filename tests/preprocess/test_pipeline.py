"""`synctalk preprocess` end to end on the 5 s real clip: outputs, contract, resume, force, interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synctalk.data import STEPS, SubjectDataset
from synctalk.data.contract import FACE_MISSING, PARSING_LABELS

BUILT = tuple(STEPS)


@pytest.fixture
def run_preprocess(quick_config):
    from preprocess.run import preprocess

    def run(video, root, force=(), **preprocess_config):
        cfg = quick_config(**preprocess_config)
        return preprocess(video, root, cfg.preprocess, force=force, progress=False, full_config=cfg)

    return run


def test_all_built_steps_ran_and_the_subject_validates(may_subject):
    _, root, report = may_subject
    assert [s.name for s in report.steps if s.status == "ran"] == list(BUILT)
    ds = SubjectDataset(root, require=BUILT)
    assert (len(ds), ds.fps, ds.width, ds.height) == (125, 25.0, 512, 512)
    assert (ds.face_flags != FACE_MISSING).mean() >= 0.99
    assert len(ds.audio()) == 125 * 16000 // 25
    meta = json.loads((root / "meta.json").read_text())
    assert meta["crop"] == {"x0": 0, "y0": 0, "side": 512, "source_width": 512, "source_height": 512}
    assert meta["source"]["sha256"] and meta["steps"]["landmarks"]["faces_detected_fraction"] >= 0.99
    for name in ("sheet.png", "blendshapes.png", "crop.png", "pose.png", "pose_axes.png", "torso_track.png"):
        assert (root / "qa" / name).stat().st_size > 5000


def test_outputs_make_sense(may_subject):
    _, root, _ = may_subject
    ds = SubjectDataset(root, require=BUILT)
    labels = ds.parsing(60)
    nose = ds.landmarks[60, 1, :2].astype(int)
    assert labels[nose[1], nose[0]] in (PARSING_LABELS["head"],)
    assert labels[0, 0] == PARSING_LABELS["background"]
    # Mouth opens and closes while she speaks: jawOpen varies over the clip.
    jaw = ds.blendshapes[:, 25]
    assert jaw.max() - jaw.min() > 0.2
    # gt keeps the person and swaps the background for the plate.
    person = labels != PARSING_LABELS["background"]
    gt, frame = ds.gt(60).astype(int), ds.image(60).astype(int)
    assert np.abs(gt - frame)[person].mean() < 6
    split = json.loads((root / "splits.json").read_text())
    assert split["val"] == list(range(125 - 12, 125)) and split["train"] == list(range(125 - 12))


def test_resume_skips_and_force_reruns_dependents(may_subject, tmp_path, run_preprocess):
    import shutil


    video, shared, _ = may_subject
    root = tmp_path / "subject"
    shutil.copytree(shared, root)  # the session's subject stays as it was for other tests
    again = run_preprocess(video, root)
    assert {s.status for s in again.steps} == {"up to date"}
    forced = run_preprocess(video, root, force=("background",))
    ran = [s.name for s in forced.steps if s.status == "ran"]
    assert ran == ["background", "torso", "torso_track"]  # these depend on the background; splits do not
    changed = run_preprocess(video, root, val_fraction=0.2)
    # the sync model leaves the validation tail unseen, so it is retrained with the new split
    assert [s.name for s in changed.steps if s.status == "ran"] == ["audio_features", "splits"]
    assert len(json.loads((root / "splits.json").read_text())["val"]) == 25


def test_interrupted_step_is_redone_and_nothing_else(may_subject, tmp_path, monkeypatch, run_preprocess):
    """A run killed in the middle of the torso step leaves the finished steps alone; the rerun redoes torso."""
    import shutil

    import preprocess.run as run_module

    video, root, _ = may_subject
    copy = tmp_path / "subject"
    shutil.copytree(root, copy)
    original = run_module.run_torso

    def interrupted(ctx):
        ctx.writer.write_frame("torso", 0, np.zeros((512, 512, 3), np.uint8))
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "PIPELINE", tuple(
        run_module.Step(s.name, interrupted, s.depends, s.config_keys, s.reads_source, s.version)
        if s.name == "torso" else s for s in run_module.PIPELINE))
    with pytest.raises(KeyboardInterrupt):
        run_preprocess(video, copy, force=("torso",))
    meta = json.loads((copy / "meta.json").read_text())
    assert "torso" not in meta["steps"] and meta["steps"]["background"]["done"]
    monkeypatch.setattr(run_module, "PIPELINE", tuple(
        run_module.Step(s.name, original, s.depends, s.config_keys, s.reads_source, s.version)
        if s.name == "torso" else s for s in run_module.PIPELINE))
    resumed = run_preprocess(video, copy)
    assert [s.name for s in resumed.steps if s.status == "ran"] == ["torso"]
    ds = SubjectDataset(copy, require=BUILT)
    assert ds.torso(0).mean() > 20  # the black frame written before the interruption was replaced


def test_audio_features_from_a_given_checkpoint_or_mel(may_subject, tmp_path, quick_config):
    """audio.sync_checkpoint skips training on the subject; audio.backend=mel needs no model at all."""
    import shutil

    import torch

    from preprocess.run import preprocess
    from synctalk.audio.sync_model import SyncModel, SyncModelConfig, save_sync_model

    video, root, _ = may_subject
    copy = tmp_path / "subject"
    shutil.copytree(root, copy)
    (copy / "sync.pt").unlink()
    torch.manual_seed(0)
    save_sync_model(SyncModel(SyncModelConfig(0.125, 0.125)), tmp_path / "given.pt")
    cfg = quick_config()
    cfg.audio.sync_checkpoint = str(tmp_path / "given.pt")
    report = preprocess(video, copy, cfg.preprocess, progress=False, full_config=cfg)
    assert [s.name for s in report.steps if s.status == "ran"] == ["audio_features"]
    info = json.loads((copy / "audio_features.json").read_text())
    assert info["checkpoint"] == str((tmp_path / "given.pt").resolve()) and not (copy / "sync.pt").exists()
    cfg.audio.backend = "mel"
    preprocess(video, copy, cfg.preprocess, progress=False, full_config=cfg)
    assert SubjectDataset(copy, require=("audio_features",)).audio_features.shape == (125, 80, 16)
