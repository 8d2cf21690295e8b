"""The phonetic front end (synctalk.audio.phones): frame alignment of the viseme track, real speech through the
decoder, silence and non-speech, incremental equals offline, and a clear error without pocketsphinx."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from conftest import real_file

from synctalk.audio import phones as P
from synctalk.errors import AssetError

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")


def _track(segments: list[tuple[str, float, float]], seconds: float) -> np.ndarray:
    track = np.zeros(int(round(seconds * P.LABEL_HZ)), np.int64)
    for viseme, start, end in segments:
        track[int(round(start * P.LABEL_HZ)):int(round(end * P.LABEL_HZ))] = P.VISEMES.index(viseme)
    return track


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_frames_see_the_viseme_at_their_centre_time(fps):
    """Known boundaries (0.5 s, 1.0 s, 1.2 s): a frame whose centre (i + 0.5) / fps lies more than 3 σ inside a
    segment gets that viseme alone; a centre on a boundary gets half of each side; rows sum to 1."""
    segments = [("aa", 0.5, 1.0), ("PP", 1.0, 1.2)]
    track = _track(segments, 2.0)
    frames = np.arange(int(2.0 * fps))
    out = P._frame_visemes(track, frames, fps)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)
    centres = (frames + 0.5) / fps
    margin = 3 * P.SMOOTH_S + 0.01
    for i, t in enumerate(centres):
        expected = "sil"
        for viseme, start, end in segments:
            if start <= t < end:
                expected = viseme
        near = min(abs(t - b) for b in (0.5, 1.0, 1.2))
        if near > margin:
            assert out[i, P.VISEMES.index(expected)] > 0.999, (i, t, expected)
    if fps == 25.0:   # frame 12's centre is exactly 0.5 s: sil and aa half each
        np.testing.assert_allclose(out[12, [0, P.VISEMES.index("aa")]], [0.5, 0.5], atol=1e-6)


def test_every_cmu_phone_has_a_viseme():
    cmu = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
           "ZH").split()
    assert sorted(P.PHONE_TO_VISEME) == sorted(cmu)
    assert P.PHONE_TO_VISEME["M"] == P.PHONE_TO_VISEME["B"] == P.VISEMES.index("PP")


def test_silence_and_non_speech():
    silent = P.phone_features(np.zeros(16000, np.float32), 25, 25.0)
    assert silent.shape == (25, P.FEATURE_SIZE)
    np.testing.assert_allclose(silent[:, 0], 1.0, atol=1e-6)      # all sil
    assert (silent[:, -2:] == 0).all()                            # no loudness, no voicing
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)  # a steady hum: loud and voiced
    hum = P.phone_features(tone, 25, 25.0)
    assert np.isfinite(hum).all() and (hum[2:-2, -2] > 0.5).all() and (hum[2:-2, -1] > 0.9).all()
    noise = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    hiss = P.phone_features(noise, 25, 25.0)
    assert (hiss[2:-2, -1] < 0.5).all()                           # loud but not voiced


def _speech(seconds: float) -> np.ndarray:
    from synctalk.io.media import load_audio

    return load_audio(real_file("audio/jfk_11s.flac"), 16000)[:int(seconds * 16000)]


def test_real_speech_is_mostly_visemes_and_silence_is_sil():
    samples = _speech(11.0)
    features = P.phone_features(samples, 275, 25.0)
    assert features.shape == (275, P.FEATURE_SIZE) and np.isfinite(features).all()
    loud = features[:, -2] > 0.6
    speech_share = 1 - features[loud, 0]                          # non-sil activation where the voice is loud
    assert loud.sum() > 50 and speech_share.mean() > 0.7
    quiet = features[:, -2] < 0.1
    assert quiet.any() and features[quiet, 0].mean() > 0.6
    # mouth-closing visemes (p, b, m) and open vowels both occur
    assert features[:, P.VISEMES.index("PP")].max() > 0.9 and features[:, P.VISEMES.index("aa")].max() > 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_incremental_equals_offline(seed):
    samples = _speech(4.3)
    n_frames = int(len(samples) / 16000 * 25)
    offline = P.phone_features(samples, n_frames, 25.0)
    tracker = P.PhoneTracker(25.0)
    rng = np.random.default_rng(seed)
    start = 0
    seen = 0
    while start < len(samples):
        size = int(rng.integers(200, 9000))
        tracker.feed(samples[start:start + size])
        start += size
        ready = min(tracker.ready(), n_frames)
        if ready > seen:
            np.testing.assert_array_equal(tracker.features(seen, ready), offline[seen:ready])
            seen = ready
    lookahead = P.BLOCK_S + P.CONTEXT_S + 3 * P.SMOOTH_S + 1 / P.LABEL_HZ    # a block, its context, the window
    assert seen >= n_frames - np.ceil(lookahead * 25) - 1
    tracker.finish()
    np.testing.assert_array_equal(tracker.features(0, n_frames), offline)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_pocketsphinx(name, *args, **kwargs):
        if name == "pocketsphinx":
            raise ImportError("No module named 'pocketsphinx'")
        return real_import(name, *args, **kwargs)

    P._model_paths.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_pocketsphinx)
    with pytest.raises(AssetError, match="pip install pocketsphinx"):
        P.phone_features(np.zeros(1600, np.float32), 1, 25.0)
    monkeypatch.undo()
    P._model_paths.cache_clear()


def test_the_phones_backend_of_compute_features():
    from synctalk.audio.features import compute_features

    samples = _speech(2.0)
    result = compute_features("phones", samples, 16000, 50, 25.0)
    assert result.info["backend"] == "phones" and result.info["shape"] == [P.FEATURE_SIZE]
    np.testing.assert_array_equal(result.features, P.phone_features(samples, 50, 25.0))


def test_synthetic_speech_from_espeak_ng(tmp_path):
    """espeak-ng's voice (a Debian package; skipped where it is absent): the decoder hears speech where the
    synthesiser spoke, the lip closure of the m in 'map' and silence in the pause between the two sentences."""
    import shutil
    import subprocess

    from synctalk.io.media import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    sentences = []
    for k, text in enumerate(("Bob bought a map.", "Maybe.")):
        wav = tmp_path / f"tts{k}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150", text], check=True, capture_output=True)
        sentences.append(load_audio(wav, 16000))
    samples = np.concatenate([sentences[0], np.zeros(16000, np.float32), sentences[1]])
    n = int(len(samples) / 16000 * 25)
    features = P.phone_features(samples, n, 25.0)
    first_s = len(sentences[0]) / 16000
    pause = slice(int((first_s + 0.3) * 25), int((first_s + 0.7) * 25))
    assert features[pause, 0].min() > 0.99                          # the second of digital silence is sil
    speech = features[:, -2] > 0.5
    # about half of the loud frames: the decoder labels espeak's plosive closures and some vowels SIL or +SPN+
    # (a closed mouth for b and p is right; measured 0.50)
    assert (1 - features[speech, 0]).mean() > 0.4
    assert features[:, P.VISEMES.index("PP")].max() > 0.5          # m: the lips close
