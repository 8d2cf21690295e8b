"""`synctalk stream`: streamed frames equal the offline render; PCM on stdin; latency report."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import speech_like

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mel_aligned_frames():
    from synctalk.inference.stream import mel_aligned_frames

    assert mel_aligned_frames(25.0) == 5 and mel_aligned_frames(30.0) == 3 and mel_aligned_frames(50.0) == 5


def _stream_and_offline(avatar, speech):
    """Render ``speech`` offline and streamed in uneven chunks: (offline, streamed, arrivals, renderer)."""
    from synctalk.inference.drive import make_drive
    from synctalk.inference.stream import StreamRenderer
    from synctalk.inference.video import RenderOptions, render_frames

    options = RenderOptions(size=8)
    n = avatar.n_frames(len(speech))
    features = avatar.audio_features(speech, n)
    drive = make_drive(n, avatar.subject.poses.numpy(), avatar.subject.expressions.numpy(),
                       avatar.head.expression_names, avatar.subject.train, avatar.fps)
    offline = render_frames(avatar, features, drive, list(range(n)), size=8)

    renderer = StreamRenderer(avatar, options, horizon_s=0.5)   # the pose schedule has to grow on the way
    streamed, arrivals = [], []
    rng = np.random.default_rng(0)
    position = 0
    while position < len(speech):
        step = int(rng.integers(300, 4000))     # uneven chunks, some shorter than a frame
        got = renderer.push(speech[position:position + step])
        position += step
        arrivals.append((position, len(got)))
        streamed += got
    streamed += renderer.push(np.zeros(0, np.float32), last=True)
    return offline, streamed, arrivals, renderer


def test_streamed_frames_equal_the_offline_render(trained_workspace):
    from synctalk.inference.avatar import Avatar

    workspace, _ = trained_workspace
    avatar = Avatar.load(workspace)
    offline, streamed, arrivals, renderer = _stream_and_offline(avatar, speech_like(2.0, seed=7))
    assert len(streamed) == len(offline)
    np.testing.assert_array_equal(np.stack(streamed), np.stack(offline))
    # frames come out as audio arrives, each at most the lookahead after its audio
    emitted = np.cumsum([k for _, k in arrivals])
    heard_s = np.array([p for p, _ in arrivals]) / 16000
    assert emitted[len(emitted) // 2] > 0
    assert np.all(emitted / avatar.fps <= heard_s + 1e-9)
    assert np.all(emitted / avatar.fps >= heard_s - renderer.lookahead_s - 1 / avatar.fps - 0.3)
    assert len(renderer.audio) < 16000 * 1.5   # old audio is dropped


@pytest.mark.parametrize("backend", ["phones", "phones+ave"])
def test_streamed_phones_frames_equal_the_offline_render(tmp_path, backend):
    """A workspace on the phones backend (alone or beside ave): the stream decodes phones incrementally and draws the
    offline frames."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")
    from conftest import build_subject, tiny_train_config

    from synctalk.audio.sync_model import SyncModel, SyncModelConfig, save_sync_model
    from synctalk.inference.avatar import Avatar
    from synctalk.train.trainer import train

    subject = build_subject(tmp_path / "s", n_frames=12, size=(24, 24), audio=speech_like(12 / 25))
    torch.manual_seed(0)
    save_sync_model(SyncModel(SyncModelConfig(0.25, 0.25)).eval(), subject / "sync.pt")
    cfg = tiny_train_config(audio_backend=backend, lips_steps=0, torso_steps=0, mouth_generator_steps=0,
                            portrait_steps=0)
    train(subject, tmp_path / "ws", cfg, progress=False)
    avatar = Avatar.load(tmp_path / "ws")
    assert avatar.feature_info["backend"] == backend
    offline, streamed, arrivals, renderer = _stream_and_offline(avatar, speech_like(3.0, seed=7))
    assert len(streamed) == len(offline)
    np.testing.assert_array_equal(np.stack(streamed), np.stack(offline))
    emitted = np.cumsum([k for _, k in arrivals])
    heard_s = np.array([p for p, _ in arrivals]) / 16000
    assert emitted[-1] > 0                                          # frames came before the end of the audio
    assert np.all(emitted / avatar.fps >= heard_s - renderer.lookahead_s - 1 / avatar.fps - 0.3)


def test_pcm_chunks_resample_stdin_audio():
    from synctalk.inference.stream import pcm_chunks

    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(8000) / 8000) * 32767).astype("<i2")
    chunks = list(pcm_chunks(io.BytesIO(tone.tobytes() + b"\x01"), rate=8000, chunk_s=0.1))
    audio = np.concatenate(chunks)
    assert abs(len(audio) - 16000) <= 32
    spectrum = np.abs(np.fft.rfft(audio[1000:15000]))
    assert abs(np.argmax(spectrum) * 16000 / len(audio[1000:15000]) - 200) < 5


def test_stream_to_mp4_reports_latency(trained_workspace, tmp_path):
    from synctalk.inference.stream import stream
    from synctalk.inference.video import RenderOptions
    from synctalk.io.media import load_audio, probe, write_wav

    workspace, _ = trained_workspace
    write_wav(tmp_path / "speech.wav", speech_like(1.0, seed=8))
    report = stream(workspace, str(tmp_path / "speech.wav"), str(tmp_path / "live.mp4"), RenderOptions(size=8),
                    chunk_s=0.1, realtime=False)
    assert report.n_frames == 25 and report.latencies_s and report.sustained_fps > 0
    assert "latency" in report.summary()
    info = probe(tmp_path / "live.mp4")
    assert info.has_audio and abs(len(load_audio(tmp_path / "live.mp4")) / 16000 - 1.0) <= 1 / 25
    raw = stream(workspace, str(tmp_path / "speech.wav"), str(tmp_path / "frames.rgb"), RenderOptions(size=8),
                 realtime=False)
    assert (tmp_path / "frames.rgb").stat().st_size == raw.n_frames * 8 * 8 * 3


def test_stream_cli_from_stdin(trained_workspace, tmp_path, monkeypatch, capsys):
    import sys

    from synctalk.cli.main import main

    workspace, _ = trained_workspace
    pcm = (speech_like(0.6, seed=9) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(pcm)})())
    code = main(["stream", str(workspace), "--audio", "-", "-o", str(tmp_path / "live.mp4"), "--size", "8", "-q"])
    assert code == 0 and (tmp_path / "live.mp4").is_file()
    assert "latency per chunk" in capsys.readouterr().out
