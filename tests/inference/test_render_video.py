"""`synctalk render`: frame count and audio sync of the output, audio formats, chunking, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import speech_like

from synctalk.errors import MediaError, UserInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_audio(path, samples, rate=16000, channels=1):
    """Write test audio in any container ffmpeg knows (by suffix) from 16 kHz mono samples."""
    import subprocess

    from synctalk.io.media import ffmpeg_exe, write_wav

    wav = path.with_suffix(".src.wav")
    write_wav(wav, samples, 16000)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), "-ar", str(rate), "-ac", str(channels),
                    str(path)], check=True)
    return path


def _video_frames(path):
    from synctalk.io.media import read_frames

    return np.stack(list(read_frames(path)))


def test_output_has_one_frame_per_frame_of_audio_and_the_audio_in_sync(trained_workspace, tmp_path):
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.media import load_audio, probe

    workspace, _ = trained_workspace
    speech = speech_like(1.3, seed=3)
    audio = _write_audio(tmp_path / "speech.wav", speech)
    report = render_video(workspace, audio, tmp_path / "out.mp4", RenderOptions(frames_dir=tmp_path / "png"),
                          progress=False)
    assert report.n_frames == round(1.3 * 25) and report.frame_size == (32, 32)
    frames = _video_frames(tmp_path / "out.mp4")
    assert frames.shape == (report.n_frames, 32, 32, 3)
    assert len(list((tmp_path / "png").glob("*.png"))) == report.n_frames
    info = probe(tmp_path / "out.mp4")
    assert info.has_audio and abs(info.fps - 25) < 1e-6
    muxed = load_audio(tmp_path / "out.mp4", 16000)
    assert abs(len(muxed) / 16000 - report.n_frames / 25) <= 1 / 25
    # the muxed track starts with the input: cross-correlation peaks at lag 0 (within 1 ms)
    n = min(len(muxed), len(speech))
    lags = np.arange(-160, 161)
    corr = [np.dot(muxed[max(0, k):n + min(0, k)], speech[max(0, -k):n - max(0, k)]) for k in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 16


@pytest.mark.parametrize("name, rate, channels", [("speech.flac", 16000, 1), ("speech.wav", 44100, 2),
                                                  ("speech.m4a", 48000, 1), ("speech.mp3", 22050, 1)])
def test_audio_formats_and_rates_give_the_same_frame_count(trained_workspace, tmp_path, name, rate, channels):
    from synctalk.inference.video import RenderOptions, render_video

    workspace, _ = trained_workspace
    audio = _write_audio(tmp_path / name, speech_like(0.8, seed=4), rate, channels)
    report = render_video(workspace, audio, tmp_path / "out.mp4", RenderOptions(size=16), progress=False)
    assert abs(report.n_frames - 0.8 * 25) <= 1
    assert _video_frames(tmp_path / "out.mp4").shape[0] == report.n_frames


def test_frames_are_rendered_and_written_chunk_by_chunk(trained_workspace, tmp_path, monkeypatch):
    """Memory stays flat for long audio: a chunk is encoded before the next is rendered."""
    import synctalk.inference.video as video
    from synctalk.io.media import VideoWriter

    events = []
    render_frames = video.render_frames
    monkeypatch.setattr(video, "render_frames", lambda *a, **k: events.append(("render", len(a[3]))) or
                        render_frames(*a, **k))
    write = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, frame: events.append(("write", 1)) or write(self, frame))
    workspace, _ = trained_workspace
    audio = _write_audio(tmp_path / "long.wav", speech_like(12.0, seed=5))
    report = video.render_video(workspace, audio, tmp_path / "out.mp4", video.RenderOptions(size=4, chunk=50),
                                progress=False)
    renders = [n for kind, n in events if kind == "render"]
    assert report.n_frames == 300 and renders == [50] * 6
    in_flight, peak = 0, 0
    for kind, n in events:
        in_flight = in_flight + n if kind == "render" else in_flight - 1
        peak = max(peak, in_flight)
    assert peak == 50


def test_pose_modes_and_portrait_output_size(trained_workspace, tmp_path):
    from synctalk.inference.video import RenderOptions, render_video

    workspace, _ = trained_workspace
    audio = _write_audio(tmp_path / "speech.wav", speech_like(0.5, seed=6))
    still = render_video(workspace, audio, tmp_path / "still.mp4", RenderOptions(pose="still", still_frame=3,
                                                                                blink="none"), progress=False)
    portrait = render_video(workspace, audio, tmp_path / "portrait.mp4",
                            RenderOptions(portrait=True, blink="auto", plain_video=tmp_path / "plain.mp4"),
                            progress=False)
    assert still.frame_size == (32, 32) and portrait.frame_size == (48, 48)
    assert _video_frames(tmp_path / "portrait.mp4").shape[1:] == (48, 48, 3)
    # the same pass also wrote the renders before paste-back: what a plain render of the same drive gives
    render_video(workspace, audio, tmp_path / "alone.mp4", RenderOptions(blink="auto"), progress=False)
    plain, alone = _video_frames(tmp_path / "plain.mp4"), _video_frames(tmp_path / "alone.mp4")
    assert plain.shape == (portrait.n_frames, 32, 32, 3)
    assert np.abs(plain.astype(int) - alone.astype(int)).mean() < 1
    with pytest.raises(UserInputError, match="needs portrait=True"):
        render_video(workspace, audio, tmp_path / "x.mp4", RenderOptions(plain_video=tmp_path / "p.mp4"))


def test_bad_inputs_fail_with_clear_errors(trained_workspace, tmp_path):
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.media import write_wav

    workspace, _ = trained_workspace
    speech = _write_audio(tmp_path / "speech.wav", speech_like(0.4))
    with pytest.raises(UserInputError, match="not a trained workspace"):
        render_video(tmp_path / "nowhere", speech, tmp_path / "out.mp4", progress=False)
    write_wav(tmp_path / "silent.wav", np.zeros(8000, np.float32))
    with pytest.raises(MediaError, match="silent.*--allow-silent"):
        render_video(workspace, tmp_path / "silent.wav", tmp_path / "out.mp4", progress=False)
    allowed = render_video(workspace, tmp_path / "silent.wav", tmp_path / "out.mp4",
                           RenderOptions(allow_silent=True, size=8), progress=False)
    assert allowed.n_frames == 12
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(MediaError, match="notes.wav"):
        render_video(workspace, tmp_path / "notes.wav", tmp_path / "out.mp4", progress=False)
    with pytest.raises(UserInputError, match="not found"):
        render_video(workspace, tmp_path / "missing.wav", tmp_path / "out.mp4", progress=False)
    with pytest.raises(UserInputError, match=".mp4"):
        render_video(workspace, speech, tmp_path / "out.avi", progress=False)


def test_render_cli(trained_workspace, tmp_path, capsys):
    from synctalk.cli.main import main

    workspace, _ = trained_workspace
    audio = _write_audio(tmp_path / "speech.flac", speech_like(0.6))
    code = main(["render", str(workspace), "--audio", str(audio), "-o", str(tmp_path / "cli.mp4"), "--pose",
                 "smooth", "--size", "16", "-q"])
    assert code == 0 and (tmp_path / "cli.mp4").is_file()
    assert "frames/s" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "none"), "--audio", str(audio), "-o", str(tmp_path / "x.mp4")]) == 2
