"""The mouth stage: it needs no trained head, logs its validation, resumes exactly, and renders use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import interrupt_on_call, speech_like, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mouth_only(**overrides):
    return tiny_train_config(head_steps=0, lips_steps=0, torso_steps=0, portrait_steps=0, checkpoint_every=2,
                             **overrides)


def test_mouth_stage_logs_and_resumes_exactly(make_subject, tmp_path, monkeypatch):
    from synctalk.train import mouth
    from synctalk.train.trainer import train

    subject = make_subject(n_frames=12, size=(32, 32))
    cfg = mouth_only(mouth_generator_steps=4)
    train(subject, tmp_path / "straight", cfg, progress=False, stages=("mouth",))
    info = json.loads((tmp_path / "straight" / "train_log.json").read_text())["stages"]["mouth"]
    assert info["status"] == "done" and info["step"] == 4
    for key in ("val_ellipse_psnr_true", "val_ellipse_psnr_predicted", "val_ellipse_psnr_mean",
                "predictor_val_r_jawopen"):
        assert np.isfinite(info[key]), key
    assert (tmp_path / "straight" / "val" / "mouth_0000004.png").is_file()
    assert (tmp_path / "straight" / "val" / "mouth_sweep_0000004.png").is_file()
    from synctalk.train.trainer import TrainReport

    line = TrainReport(tmp_path / "straight", {"mouth": info}).lines()[0]
    assert line.startswith("mouth") and "4 steps" in line and "(from the audio)" in line

    original = mouth._batch
    monkeypatch.setattr(mouth, "_batch", interrupt_on_call(original))
    with pytest.raises(KeyboardInterrupt):
        train(subject, tmp_path / "resumed", cfg, progress=False, stages=("mouth",))
    monkeypatch.setattr(mouth, "_batch", original)
    train(subject, tmp_path / "resumed", cfg, progress=False, stages=("mouth",))
    a = torch.load(tmp_path / "straight" / "checkpoints" / "mouth" / "ckpt_0000004.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "mouth" / "ckpt_0000004.pt", weights_only=False)
    for name, value in a["ema"].items():
        torch.testing.assert_close(b["ema"][name], value, rtol=0, atol=0)


def test_renders_redraw_the_mouth_from_the_audio(trained_workspace):
    from synctalk.inference.avatar import Avatar
    from synctalk.models.frame import FrameInputs
    from synctalk.models.mouth import mouth_boxes

    workspace, _ = trained_workspace
    avatar = Avatar.load(workspace)
    assert avatar.mouth is not None
    s, frame = avatar.subject, 3
    inputs = FrameInputs(c2w=s.poses[frame], audio_code=avatar.audio_codes(s.features, [frame])[0],
                         expression=s.expressions[frame], torso_pose=s.pose_vectors[frame], appearance_frame=frame)
    shapes = avatar.mouth_shapes(s.features, [frame])
    assert shapes.shape == (1, 27)
    plain = avatar.render(inputs, frame).rgb
    closed = avatar.render(inputs, frame, mouth_shapes=np.full(27, -2.0, np.float32)).rgb
    opened = avatar.render(inputs, frame, mouth_shapes=np.full(27, 2.0, np.float32)).rgb
    assert not torch.equal(closed, opened)
    cx, cy, side = mouth_boxes(avatar.ds.landmarks[[frame]])[0].tolist()
    ys, xs = torch.nonzero((closed != plain).any(-1), as_tuple=True)
    assert len(ys) and (xs + 0.5 - cx).abs().max() < side / 2 and (ys + 0.5 - cy).abs().max() < side / 2


def test_render_no_mouth_keeps_the_field_mouth(trained_workspace, tmp_path):
    from synctalk.data import SubjectDataset
    from synctalk.errors import UserInputError
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.images import read_image
    from synctalk.io.media import write_wav
    from synctalk.models.mouth import mouth_boxes

    workspace, subject = trained_workspace
    audio = tmp_path / "speech.wav"
    write_wav(audio, speech_like(0.4, seed=5), 16000)
    for name, mouth, gain in (("with", True, 1.0), ("without", False, 1.0), ("gain", True, 3.0)):
        options = RenderOptions(mouth=mouth, mouth_gain=gain, frames_dir=tmp_path / name, pose="still",
                                still_frame=3)
        render_video(workspace, audio, tmp_path / f"{name}.mp4", options, progress=False)
    with_mouth = np.stack([read_image(p) for p in sorted((tmp_path / "with").glob("*.png"))]).astype(int)
    without = np.stack([read_image(p) for p in sorted((tmp_path / "without").glob("*.png"))]).astype(int)
    livelier = np.stack([read_image(p) for p in sorted((tmp_path / "gain").glob("*.png"))]).astype(int)
    assert not np.array_equal(livelier, with_mouth)
    with pytest.raises(UserInputError, match="mouth-gain"):
        render_video(workspace, audio, tmp_path / "bad.mp4", RenderOptions(mouth_gain=0.0), progress=False)
    assert with_mouth.shape == without.shape and len(with_mouth) == 10
    ys, xs = np.nonzero(np.abs(with_mouth - without).max(-1).max(0) > 0)
    cx, cy, side = mouth_boxes(SubjectDataset(subject).landmarks[[3]])[0].tolist()  # all frames: frame 3's pose
    assert len(ys) and (np.abs(xs + 0.5 - cx).max() < side / 2) and (np.abs(ys + 0.5 - cy).max() < side / 2)

