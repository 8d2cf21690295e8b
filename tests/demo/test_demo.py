"""The built-in sample and `synctalk demo`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_file

from synctalk.demo.sample import make_sample_clip


@pytest.fixture(scope="module")
def clip():
    return make_sample_clip(seconds=4.0, size=192, fps=25.0, seed=1)


def test_clip_shapes_and_determinism(clip):
    assert len(clip.frames) == 100 and clip.frames[0].shape == (192, 192, 3)
    assert len(clip.audio) == 4 * 16000 and clip.mouth_open.shape == (100,)
    again = make_sample_clip(seconds=1.0, size=64, seed=1)
    other = make_sample_clip(seconds=1.0, size=64, seed=2)
    assert np.array_equal(again.frames[10], make_sample_clip(seconds=1.0, size=64, seed=1).frames[10])
    assert not np.array_equal(again.audio, other.audio)


def test_mouth_follows_the_audio(clip):
    """Per-frame loudness and mouth opening move together (sync by construction), pauses close the mouth."""
    rms = np.sqrt((clip.audio.reshape(100, -1) ** 2).mean(axis=1))
    assert np.corrcoef(rms, clip.mouth_open)[0, 1] > 0.6
    assert clip.mouth_open.max() > 0.6 and clip.mouth_open[:3].max() < 0.05  # starts silent


def test_open_mouth_changes_only_the_lower_face(clip):
    import cv2
    import skimage.data

    from synctalk.demo.sample import head_and_shoulders_crop, open_mouth, portrait_landmarks

    portrait = skimage.data.astronaut()
    points = portrait_landmarks(portrait)
    x0, y0, side = head_and_shoulders_crop(points, portrait.shape[:2])
    crop = cv2.resize(portrait[y0:y0 + side, x0:x0 + side], (192, 192), interpolation=cv2.INTER_AREA)
    pts = (points - [x0, y0]) * (192 / side)
    opened = open_mouth(crop, pts, 1.0).astype(int)
    diff = np.abs(opened - crop).sum(axis=2)
    mouth_y = int(pts[13, 1])
    assert diff[: mouth_y - 2].max() == 0            # nothing above the lips moves
    assert (diff[mouth_y:] > 30).sum() > 150         # a visible mouth opening below
    assert np.array_equal(open_mouth(crop, pts, 0.0), crop)


def test_face_landmarker_sees_the_mouth_move(clip):
    """The real Face Landmarker's jawOpen on the generated frames tracks the ground-truth opening."""
    from synctalk.runtime import import_mediapipe

    mp = import_mediapipe()
    from mediapipe.tasks.python import BaseOptions, vision

    model = real_file("models/face_landmarker.task")
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                           output_face_blendshapes=True, num_faces=1)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        jaw = []
        for frame in clip.frames:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
            assert result.face_blendshapes, "no face found in a sample frame"
            jaw.append(next(c.score for c in result.face_blendshapes[0] if c.category_name == "jawOpen"))
    assert np.corrcoef(jaw, clip.mouth_open)[0, 1] > 0.8


def test_demo_command_end_to_end(tmp_path, capsys):
    from synctalk.cli.main import main
    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.io.media import probe

    out = tmp_path / "demo"
    quick_train = ["train.head_steps=3", "train.lips_steps=1", "train.torso_steps=1", "train.rays=64",
                   "train.patch=8", "train.eval_size=16", "train.eval_frames=1", "model.nerf.grid_resolution=16",
                   "train.portrait_steps=2", "train.portrait_frames=2", "train.portrait_patch=32",
                   "train.mouth_generator_steps=2", "train.mouth_generator_width=8",
                   "model.nerf.max_steps=16", "demo.render_size=32"]   # an untrained head marches every sample
    assert main(["demo", "-o", str(out), "demo.seconds=2", "demo.size=128", "--seed", "3", "sync.max_steps=4",
                 "sync.batch_size=8", *quick_train]) == 0
    printed = capsys.readouterr().out
    assert "done  preprocess" in printed or "skip  preprocess" in printed
    info = probe(out / "sample.mp4")
    assert (info.width, info.height, info.fps, info.has_audio) == (128, 128, 25.0, True)
    assert abs(info.duration_s - 2.0) < 0.1
    cfg = load_config(SyncTalkConfig, out / "config.yaml")
    assert cfg.seed == 3 and cfg.demo.seconds == 2.0
    report = json.loads((out / "demo_report.json").read_text())
    assert (out / "sample_sheet.png").stat().st_size > 10_000
    assert len(json.loads((out / "sample_truth.json").read_text())["mouth_open"]) == 50
    if report["stages_blocked"]:
        pytest.skip("face_landmarker.task not in the test model cache: preprocess stage not exercised")
    assert report["stages_run"] == ["sample", "preprocess", "train", "render"]
    assert f"video: {out.resolve() / 'render.mp4'}" in printed
    log = json.loads((out / "workspace" / "train_log.json").read_text())
    assert [log["stages"][s]["status"] for s in ("head", "lips", "torso", "portrait")] == ["done"] * 4
    rendered = probe(out / "render.mp4")
    assert rendered.has_audio and abs(rendered.duration_s - 1.0) <= 0.05
    assert (probe(out / "render_portrait.mp4").width, probe(out / "render_portrait.mp4").height) == (128, 128)
    from synctalk.data import SubjectDataset

    subject = SubjectDataset(out / "subject", require=("frames", "audio", "landmarks", "parsing", "audio_features",
                                                       "splits"))
    assert len(subject) == 50 and (subject.face_flags > 0).all()
    assert subject.audio_features.shape == (50, 512) and (out / "subject" / "sync.pt").is_file()
    # The landmarker sees the sample's mouth open where the generator opened it.
    truth = np.array(json.loads((out / "sample_truth.json").read_text())["mouth_open"])
    assert np.corrcoef(subject.blendshapes[:, 25], truth)[0, 1] > 0.7


def test_demo_without_model_files_says_what_is_missing(tmp_path, capsys, monkeypatch):
    from synctalk.cli.main import main

    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("SYNCTALK_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "demo.seconds=1", "demo.size=96"]) == 0
    captured = capsys.readouterr()
    assert "skip  preprocess" in captured.out and "face_landmarker.task" in captured.err
    assert str(tmp_path / "empty" / "face_landmarker.task") in captured.err
    assert json.loads((out / "demo_report.json").read_text())["stages_blocked"] == ["preprocess", "train", "render"]
