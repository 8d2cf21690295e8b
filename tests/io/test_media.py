"""Video/audio IO: real clips (fps conversion, silent video + wav, stereo flac), round trips, bad input."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import real_file

from synctalk.errors import MediaError
from synctalk.io.media import (
    VideoWriter,
    ffmpeg_exe,
    load_audio,
    load_speech,
    probe,
    read_frames,
    read_wav,
    write_video,
    write_wav,
)


def test_macron_30fps_to_25fps_frame_count():
    path = real_file("video/macron_fr_50s_30fps.mp4")
    info = probe(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (512, 512, 30.0, True)
    n_source = sum(1 for _ in read_frames(path, info=info))
    frames = list(read_frames(path, fps=25, info=info))
    assert n_source == 1510
    assert len(frames) == info.expected_frames(25, n_source) == 1258  # 1510 * 25 / 30 = 1258.3
    assert frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8


def test_macron_speech_is_cut_at_video_start_and_matches_frames():
    path = real_file("video/macron_fr_50s_30fps.mp4")
    info = probe(path)
    assert info.video_start_s == pytest.approx(0.08)  # the video stream starts 2 frames after the audio
    speech = load_speech(path)
    full = load_audio(path)
    lag = int(round(0.08 * 16000))
    assert len(full) - len(speech) == pytest.approx(lag, abs=2)
    # The cut signal is the tail of the full one (same samples, shifted by the video start).
    assert np.corrcoef(speech[16000:32000], full[16000 + lag:32000 + lag])[0, 1] > 0.99
    assert abs(len(speech) / 16000 - 1258 / 25) < 1 / 25


def test_silent_andrew_clip_needs_its_wav():
    video = real_file("video/andrew_25s_30fps_silent.mp4")
    wav = real_file("audio/andrew_25s.wav")
    info = probe(video)
    assert not info.has_audio and (info.width, info.height) == (256, 256)
    with pytest.raises(MediaError) as err:
        load_speech(video)
    assert "no audio track" in str(err.value) and "--audio" in str(err.value)
    speech = load_speech(video, wav)
    n_frames = sum(1 for _ in read_frames(video, fps=25, info=info))
    assert n_frames == 627
    assert abs(len(speech) / 16000 - n_frames / 25) < 0.1
    raw, rate = read_wav(wav)
    assert rate == 16000 and np.abs(speech - raw[: len(speech)]).max() < 1e-3  # 16 kHz mono passes through


def test_stereo_44k_flac_to_16k_mono():
    from scipy.signal import resample_poly

    path = real_file("audio/jfk_11s.flac")
    info = probe(path)
    assert (info.has_video, info.audio_sample_rate_hz, info.audio_channels) == (False, 44100, 2)
    mono = load_audio(path)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert len(mono) == pytest.approx(11.0 * 16000, abs=16)
    raw, rate = read_wav(path)
    reference = resample_poly(raw.mean(axis=1), 160, 441).astype(np.float32)
    n = min(len(reference), len(mono))
    assert np.corrcoef(reference[:n], mono[:n])[0, 1] > 0.99
    assert np.sqrt((mono[:n] ** 2).mean() / (reference[:n] ** 2).mean()) == pytest.approx(1.0, abs=0.02)


def test_channel_layouts():
    from synctalk.io.media import _layout_channels

    assert [_layout_channels(x) for x in ("mono", "stereo", "5.1(side)", "7.1", "3 channels")] == [1, 2, 6, 8, 3]


def _smooth_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width]
    return [np.stack([(xs * 4 + i * 9) % 256, (ys * 4) % 256, np.full_like(xs, 40 + 10 * i)], -1).astype(np.uint8)
            for i in range(n)]


def test_video_round_trip_with_audio(tmp_path):
    frames = _smooth_frames(20, 48, 64)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(12800) / 16000)).astype(np.float32)  # 0.8 s
    write_wav(tmp_path / "tone.wav", tone)
    out = write_video(tmp_path / "clip.mp4", frames, fps=25, audio_path=tmp_path / "tone.wav")
    info = probe(out)
    assert (info.width, info.height, info.fps, info.has_audio, info.audio_channels) == (64, 48, 25.0, True, 1)
    back = list(read_frames(out, info=info))
    assert len(back) == 20
    assert np.abs(back[10].astype(int) - frames[10]).mean() < 4  # H.264 at crf 18 on smooth content
    audio = load_audio(out)
    assert abs(len(audio) / 16000 - 0.8) < 0.05
    assert np.abs(np.fft.rfft(audio[2000:10000])).argmax() * 16000 / 8000 == pytest.approx(440, abs=4)


def test_odd_size_is_padded_to_even(tmp_path):
    out = write_video(tmp_path / "odd.mp4", _smooth_frames(3, 33, 47), fps=25)
    info = probe(out)
    assert (info.width, info.height) == (48, 34)


def test_rotation_metadata_is_applied(tmp_path):
    src = write_video(tmp_path / "wide.mp4", _smooth_frames(5, 32, 64), fps=25)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(src), "-c", "copy",
                    str(rotated)], check=True)
    info = probe(rotated)
    assert info.rotation_deg in (90, 270) and (info.width, info.height) == (32, 64)
    frames = list(read_frames(rotated, info=info))
    assert len(frames) == 5 and frames[0].shape == (64, 32, 3)


def test_writer_failure_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(target, fps=25) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="size"), VideoWriter(target, fps=25) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        writer.write(np.zeros((16, 18, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        probe(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match="cannot be read as video or audio"):
        probe(garbage)
    with pytest.raises(MediaError, match="is a folder"):
        probe(tmp_path)
    write_wav(tmp_path / "a.wav", np.zeros(1600, np.float32))
    with pytest.raises(MediaError, match="no video stream"):
        list(read_frames(tmp_path / "a.wav"))


def test_truncated_video_is_reported(tmp_path):
    src = write_video(tmp_path / "full.mp4", _smooth_frames(30, 64, 64), fps=25)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    info = probe(cut)  # the header (moov at the front) is intact, the frame data is not
    with pytest.raises(MediaError, match="truncated or corrupt: decoded"):
        list(read_frames(cut, info=info))


@pytest.mark.parametrize("suffix, codec", [(".mp3", "libmp3lame"), (".m4a", "aac"), (".flac", "flac"),
                                           (".wav", "pcm_s16le")])
def test_audio_formats_decode_to_16k_mono(tmp_path, suffix, codec):
    """A 48 kHz stereo tone (440 Hz left, 440 Hz right) in each container decodes to 16 kHz mono, same length."""
    rate, seconds = 48000, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.4
    raw = tmp_path / "tone.f32"
    raw.write_bytes(stereo.astype(np.float32).tobytes())
    encoded = tmp_path / f"tone{suffix}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "f32le", "-ar", str(rate), "-ac", "2", "-i", str(raw),
                    "-c:a", codec, str(encoded)], check=True)
    mono = load_audio(encoded)
    assert abs(len(mono) - seconds * 16000) < 0.06 * 16000  # mp3/aac add encoder padding of a few ms
    spectrum = np.abs(np.fft.rfft(mono[4000:20000]))
    assert spectrum.argmax() * 16000 / 16000 == pytest.approx(440, abs=2)
    assert 0.3 < np.abs(mono[4000:20000]).max() < 0.5


def test_crop_and_resize_in_ffmpeg(tmp_path):
    frames = _smooth_frames(6, 48, 64)
    src = write_video(tmp_path / "src.mp4", frames, fps=25)
    out = list(read_frames(src, crop=(16, 8, 32, 32), size=(16, 16), max_frames=4))
    assert len(out) == 4 and out[0].shape == (16, 16, 3)
    expected = frames[2][8:40, 16:48].reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))  # 2x2 area average
    assert np.abs(out[2].astype(float) - expected).mean() < 5
