"""Bad input to `synctalk preprocess`: each case fails early with a message that names the problem and the fix,
or is handled (cut, interpolated, excluded) and reported."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest
from conftest import real_file

from synctalk.config import PreprocessConfig
from synctalk.data import SubjectDataset
from synctalk.data.contract import FACE_MISSING
from synctalk.errors import MediaError
from synctalk.io.media import ffmpeg_exe, probe, write_video, write_wav

FAST = dict(qa=False, background_samples=20)


@pytest.fixture(scope="module")
def sample():
    from synctalk.demo.sample import make_sample_clip

    return make_sample_clip(seconds=3.0, size=256, fps=25.0, seed=4)


@pytest.fixture(scope="module", autouse=True)
def models_available():
    real_file("models/face_landmarker.task")


def _video(tmp_path, name, frames, audio=None, fps=25.0):
    wav = None
    if audio is not None:
        wav = tmp_path / f"{name}.wav"
        write_wav(wav, audio)
    return write_video(tmp_path / f"{name}.mp4", frames, fps, audio_path=wav)


def _run(video, tmp_path, audio=None, **cfg):
    from preprocess.run import preprocess
    from synctalk.config import AudioConfig, SyncTalkConfig

    config = SyncTalkConfig(preprocess=PreprocessConfig(**{**FAST, **cfg}), audio=AudioConfig(backend="mel"))
    return preprocess(video, tmp_path / "subject", config.preprocess, audio=audio, progress=False,
                      full_config=config)


def test_no_face_anywhere(tmp_path):
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), (0, 0), 3) for _ in range(25)]
    video = _video(tmp_path, "noface", frames, np.zeros(16000, np.float32))
    with pytest.raises(MediaError, match="no face found in any of the 5 frames sampled"):
        _run(video, tmp_path)


def test_face_in_only_part_of_the_clip(sample, tmp_path):
    blank = [np.full_like(sample.frames[0], 128)] * 50
    mostly_blank = _video(tmp_path, "mostly", sample.frames[:25] + blank, sample.audio[: 3 * 16000])
    with pytest.raises(MediaError) as err:
        _run(mostly_blank, tmp_path)
    assert "a face is visible in only 33% of the frames" in str(err.value)
    assert "frames 25-74 (1.0-3.0 s)" in str(err.value) and "min_face_fraction" in str(err.value)

    partly = _video(tmp_path, "partly", sample.frames[:60] + blank[:15], sample.audio[: 3 * 16000])
    report = _run(partly, tmp_path / "ok")
    landmarks = next(s for s in report.steps if s.name == "landmarks")
    assert landmarks.stats["excluded_ranges"] == [(60, 74)]
    ds = SubjectDataset(tmp_path / "ok" / "subject", require=("landmarks", "splits"))
    assert (ds.face_flags[60:] == FACE_MISSING).all() and (ds.face_flags[:60] != FACE_MISSING).all()
    assert max(ds.split("train")) < 60 and not [i for i in ds.split("val") if i >= 60]


def test_short_gap_is_interpolated(sample, tmp_path):
    frames = list(sample.frames)
    for i in (30, 31, 32):
        frames[i] = np.full_like(frames[i], 128)
    video = _video(tmp_path, "gap", frames, sample.audio)
    _run(video, tmp_path)
    ds = SubjectDataset(tmp_path / "subject", require=("landmarks",))
    assert ds.face_flags[30:33].tolist() == [2, 2, 2] and ds.face_flags[29] == 1 and ds.face_flags[33] == 1
    # interpolated landmarks lie between their neighbours
    mid = ds.landmarks[31, 1, :2]
    assert np.linalg.norm(mid - (ds.landmarks[29, 1, :2] + ds.landmarks[33, 1, :2]) / 2) < 2.0


def test_no_audio_track_without_audio_flag_fails_fast(tmp_path):
    video = real_file("video/andrew_25s_30fps_silent.mp4")
    with pytest.raises(MediaError, match="has no audio track and no --audio FILE was given"):
        _run(video, tmp_path)
    assert not (tmp_path / "subject" / "frames").exists()  # failed before any heavy work


def test_audio_length_mismatch(sample, tmp_path):
    video = _video(tmp_path, "clip", sample.frames, None)
    long_audio = tmp_path / "long.wav"
    write_wav(long_audio, np.zeros(5 * 16000, np.float32))
    with pytest.raises(MediaError) as err:
        _run(video, tmp_path, audio=long_audio)
    assert "is longer than the video" in str(err.value) and "by 2.00 s" in str(err.value)
    assert "preprocess.trim_to_shorter=true" in str(err.value)
    short_audio = tmp_path / "short.wav"
    write_wav(short_audio, sample.audio[:16000])
    with pytest.raises(MediaError, match="is shorter than the video"):
        _run(video, tmp_path, audio=short_audio)
    report = _run(video, tmp_path, audio=short_audio, trim_to_shorter=True)
    assert report.n_frames == 25
    ds = SubjectDataset(tmp_path / "subject", require=("frames", "audio"))
    assert len(ds.audio()) == 16000


def test_corrupt_truncated_and_not_a_video(sample, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01junk" * 500)
    with pytest.raises(MediaError, match="cannot be read as video or audio"):
        _run(garbage, tmp_path)
    wav = tmp_path / "speech.wav"
    write_wav(wav, sample.audio)
    with pytest.raises(MediaError, match="has no video stream"):
        _run(wav, tmp_path)
    full = _video(tmp_path, "full", sample.frames, sample.audio)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    with pytest.raises(MediaError, match="truncated or corrupt|cannot be read"):
        _run(cut, tmp_path)


def test_tiny_video_is_upscaled_and_reported(sample, tmp_path, caplog):
    frames = [cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in sample.frames]
    video = _video(tmp_path, "tiny", frames, sample.audio)
    report = _run(video, tmp_path, size=128)
    assert report.n_frames == 75
    assert "enlarged to 128 px" in caplog.text
    ds = SubjectDataset(tmp_path / "subject", require=("landmarks",))
    assert (ds.face_flags != FACE_MISSING).mean() > 0.9


def test_4k_wide_shot_is_cropped_around_the_small_face(sample, tmp_path):
    canvas = np.full((2160, 3840, 3), 90, np.uint8)
    frames = []
    for frame in sample.frames[:25]:
        big = canvas.copy()
        big[1200:1712, 2600:3112] = cv2.resize(frame, (512, 512), interpolation=cv2.INTER_CUBIC)
        frames.append(big)
    video = _video(tmp_path, "uhd", frames, sample.audio[:16000])
    report = _run(video, tmp_path, size=256)
    frames_step = next(s for s in report.steps if s.name == "frames")
    crop = frames_step.stats["crop"]
    assert 2600 - 150 < crop["x0"] < 2600 + 150 and 1200 - 150 < crop["y0"] < 1200 + 150
    assert 350 < crop["side"] < 700  # head-and-shoulders around a ~200 px face, not the whole 4K frame
    meta = json.loads((tmp_path / "subject" / "meta.json").read_text())
    assert meta["crop"]["source_width"] == 3840


def test_variable_frame_rate(sample, tmp_path):
    """Frames 0-29 shown at 20 fps, then 30 fps (real variable timing in one file): the output is constant
    25 fps, as long as the clip, in sync with the audio."""
    constant = _video(tmp_path, "cfr", sample.frames, None)
    vfr = tmp_path / "vfr.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(constant), "-vf",
                    "setpts='if(lt(N,30),N/20,1.5+(N-30)/30)/TB'", "-fps_mode", "passthrough",
                    "-video_track_timescale", "600", str(vfr)], check=True)
    assert probe(vfr).duration_s == pytest.approx(3.0, abs=0.1)
    audio = tmp_path / "speech.wav"
    write_wav(audio, sample.audio)
    report = _run(vfr, tmp_path, audio=audio)
    assert abs(report.n_frames - 75) <= 2
    ds = SubjectDataset(tmp_path / "subject", require=("frames", "audio"))
    assert abs(len(ds.audio()) / 16000 - len(ds) / 25) < 1e-3
    # t = 1.0 s is output frame 25 and source frame 20 (20 fps part): timing follows the timestamps.
    crop = json.loads((tmp_path / "subject" / "meta.json").read_text())["crop"]
    assert crop["side"] == 256
    errors = [np.abs(ds.image(25).astype(int) - cv2.resize(sample.frames[k], (512, 512))).mean() for k in range(75)]
    assert abs(int(np.argmin(errors)) - 20) <= 1


def test_multiple_faces_keep_the_main_subject(sample):
    """A second, smaller face in the corner never takes over the track."""
    from synctalk.face.landmarks import track_faces

    frames = []
    for k, frame in enumerate(sample.frames[:20]):
        canvas = np.full((512, 512, 3), 100, np.uint8)
        canvas[128:384, 128:384] = frame                                   # main subject, centred
        small = cv2.resize(sample.frames[-1 - k], (150, 150), interpolation=cv2.INTER_AREA)
        canvas[0:150, 362:512] = small                                     # someone else, top right
        frames.append(canvas)
    track = track_faces(iter(frames), len(frames), 25.0, progress=False)
    assert (track.flags == 1).all()
    centres = track.landmarks[:, :, :2].mean(axis=1)
    assert (np.abs(centres - [256, 220]) < 60).all()  # always the centred face, never the corner one
