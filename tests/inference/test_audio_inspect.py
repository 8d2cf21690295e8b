"""`synctalk audio-inspect`: the picture and summary of a driving track, with and without a workspace."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_file

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")


def test_speech_gets_a_picture_and_a_summary(tmp_path, capsys):
    from synctalk.cli.main import main

    audio = real_file("audio/jfk_11s.flac")
    out = tmp_path / "jfk.png"
    assert main(["audio-inspect", str(audio), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "275 frames at 25 fps" in printed and f"picture: {out}" in printed
    assert out.stat().st_size > 20_000


def test_silence_has_a_closed_mouth_and_the_workspace_curve(trained_workspace, tmp_path):
    from conftest import speech_like

    from synctalk.inference.audio_inspect import VISEME_OPENING, inspect_audio, mouth_opening
    from synctalk.io.media import write_wav

    write_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32))
    quiet = inspect_audio(tmp_path / "quiet.wav", tmp_path / "quiet.png")
    assert quiet.frames == 25 and quiet.speech_fraction == 0 and np.allclose(quiet.opening, 0, atol=1e-6)
    assert quiet.workspace_jaw is None
    write_wav(tmp_path / "buzz.wav", speech_like(2.0))
    workspace, _ = trained_workspace
    buzz = inspect_audio(tmp_path / "buzz.wav", tmp_path / "buzz.png", workspace=workspace)
    assert buzz.workspace_jaw is not None and buzz.workspace_jaw.shape == (50,) and (tmp_path / "buzz.png").is_file()
    one_hot = np.zeros((2, 17), np.float32)
    one_hot[0, 10], one_hot[1, 1] = 1.0, 1.0        # aa, PP
    np.testing.assert_allclose(mouth_opening(one_hot), [VISEME_OPENING["aa"], VISEME_OPENING["PP"]])


def test_a_missing_file_is_a_clear_error(tmp_path, capsys):
    from synctalk.cli.main import main

    assert main(["audio-inspect", str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav: file not found" in capsys.readouterr().err


def test_the_predicted_mouth_is_the_mouth_stage_else_the_head_mouth_head(trained_workspace):
    import torch
    from conftest import speech_like

    from synctalk.inference.avatar import Avatar

    workspace, _ = trained_workspace
    avatar = Avatar.load(workspace)
    features = avatar.audio_features(speech_like(1.0), 25)
    avatar.mouth_gain = 3.0                                       # a style knob: not part of the prediction
    np.testing.assert_array_equal(avatar.predicted_mouth(features, range(25)),
                                  avatar.mouth.predictor.predict(features, range(25)))
    avatar.mouth = None
    assert avatar.predicted_mouth(features, range(25)) is None   # no mouth stage, no mouth head
    codes = avatar.audio_codes(features, range(25), gain=1.0)              # the prediction is gain-free
    avatar.head.mouth_head = torch.nn.Linear(codes.shape[1], 27)
    with torch.no_grad():
        expected = avatar.head.mouth_head(codes).numpy()
    np.testing.assert_allclose(avatar.predicted_mouth(features, range(25)), expected, rtol=1e-6)


def test_without_a_mouth_stage_the_gain_stretches_the_audio_codes(trained_workspace):
    import torch
    from conftest import speech_like

    from synctalk.inference.avatar import Avatar

    workspace, _ = trained_workspace
    avatar = Avatar.load(workspace)
    features = avatar.audio_features(speech_like(1.0), 25)
    plain = avatar.audio_codes(features, range(25))
    avatar.mouth_gain = 2.0
    assert torch.equal(avatar.audio_codes(features, range(25)), plain)    # the mouth stage takes the gain
    avatar.mouth = None
    mean = avatar.audio_codes(avatar.subject.features, avatar.subject.train, gain=1.0).mean(0)
    torch.testing.assert_close(avatar.audio_codes(features, range(25)), mean + 2.0 * (plain - mean))
    torch.testing.assert_close(avatar.audio_codes(features, range(25), gain=1.0), plain)
