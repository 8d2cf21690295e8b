"""Feature backends: shapes and alignment, chunked encoding, transformers models, bad audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.audio import features as feats
from synctalk.audio import mel as melspec
from synctalk.audio.sync_model import SyncModel, SyncModelConfig
from synctalk.errors import AssetError, MediaError, UserInputError


def _speech(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)).astype(np.float32)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mel_backend_is_the_frame_window(fps):
    samples = _speech(2.0)
    out = feats.compute_features("mel", samples, 16000, int(2 * fps), fps)
    assert out.features.shape == (int(2 * fps), 80, 16) and out.info["backend"] == "mel"
    expected = melspec.frame_windows(melspec.melspectrogram(samples), int(2 * fps), fps)
    np.testing.assert_array_equal(out.features, expected)


def test_ave_backend_runs_the_audio_tower_in_batches(tmp_path):
    from synctalk.audio.sync_model import save_sync_model

    torch.manual_seed(0)
    model = SyncModel(SyncModelConfig(0.25, 0.25)).eval()
    save_sync_model(model, tmp_path / "sync.pt")
    samples = _speech(3.0, 8000)  # another sample rate on the way in
    whole = feats.compute_features("ave", samples, 8000, 75, 25.0, checkpoint=tmp_path / "sync.pt")
    small = feats.compute_features("ave", samples, 8000, 75, 25.0, model=model, batch=7)
    assert whole.features.shape == (75, 512) and whole.info["checkpoint_sha256"]
    np.testing.assert_allclose(small.features, whole.features, rtol=1e-4, atol=1e-5)
    windows = melspec.frame_windows(melspec.melspectrogram(samples, 8000), 75, 25.0)
    with torch.no_grad():
        direct = model.audio(torch.from_numpy(windows[40:41])).numpy()
    np.testing.assert_allclose(whole.features[40:41], direct, rtol=1e-4, atol=1e-5)


def test_combined_backends_put_their_parts_side_by_side(tmp_path):
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")
    from synctalk.audio.sync_model import save_sync_model

    torch.manual_seed(0)
    save_sync_model(SyncModel(SyncModelConfig(0.25, 0.25)).eval(), tmp_path / "sync.pt")
    samples = _speech(2.0)
    both = feats.compute_features("phones+ave", samples, 16000, 50, 25.0, checkpoint=tmp_path / "sync.pt")
    phones = feats.compute_features("phones", samples, 16000, 50, 25.0)
    ave = feats.compute_features("ave", samples, 16000, 50, 25.0, checkpoint=tmp_path / "sync.pt")
    np.testing.assert_array_equal(both.features, np.concatenate([phones.features, ave.features], 1))
    assert both.info["shape"] == [phones.info["shape"][0] + 512]
    assert [part["backend"] for part in both.info["parts"]] == ["phones", "ave"]
    assert both.info["checkpoint_sha256"] == ave.info["checkpoint_sha256"]   # the render finds the sync model
    assert feats.backend_parts("phones+ave") == ("phones", "ave")
    with pytest.raises(UserInputError, match="mel windows are 2-D"):
        feats.backend_parts("phones+mel")
    with pytest.raises(UserInputError, match="twice"):
        feats.backend_parts("phones+phones")
    with pytest.raises(UserInputError, match="unknown audio backend 'phones\\+dsp'"):
        feats.backend_parts("phones+dsp")


def test_bad_audio_and_backend():
    with pytest.raises(MediaError, match="empty"):
        feats.compute_features("mel", np.zeros(0, np.float32), 16000, 10, 25.0)
    with pytest.raises(UserInputError, match="unknown audio backend 'deepspeech'"):
        feats.compute_features("deepspeech", _speech(1.0), 16000, 25, 25.0)
    with pytest.raises(UserInputError, match="sync model checkpoint"):
        feats.compute_features("ave", _speech(1.0), 16000, 25, 25.0)
    silent = feats.compute_features("mel", np.zeros(16000, np.float32), 16000, 25, 25.0)
    assert (silent.features == melspec.SILENCE).all()


def test_long_audio_keeps_memory_flat(monkeypatch):
    """10 minutes of audio: the STFT runs in chunks and matches the one-shot result where they overlap."""
    samples = _speech(600.0)
    monkeypatch.setattr(melspec, "CHUNK_FRAMES", 4000)
    chunked = melspec.melspectrogram(samples)
    assert chunked.shape == (600 * 80 + 1, 80)
    head = melspec.melspectrogram(samples[:100 * 16000])  # its last frames see the reflect padding
    np.testing.assert_allclose(chunked[:7990], head[:7990], atol=1e-5)


def test_transformers_backend_needs_its_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path))
    with pytest.raises(AssetError, match=r"hubert-large-ls960-ft.*config.json"):
        feats.compute_features("hubert", _speech(1.0), 16000, 25, 25.0)


def test_transformers_backend_with_a_small_random_model(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install "
                                                               "'synctalk[hubert]')")
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    folder = tmp_path / "hubert-large-ls960-ft"
    transformers.HubertModel(config).save_pretrained(folder)
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path))
    samples = _speech(3.0)
    out = feats.compute_features("hubert", samples, 16000, 75, 25.0)
    assert out.features.shape == (75, 32) and np.isfinite(out.features).all()
    # frame i samples the 50 Hz states at its centre: (i + 0.5) / 25 s = state 2i + 0.5
    states = feats.hidden_states(transformers.AutoModel.from_pretrained(str(folder)).eval(), samples)
    assert len(states) == 150
    np.testing.assert_allclose(out.features[10], 0.5 * (states[20] + states[21]), rtol=1e-4, atol=1e-5)
    # long audio runs in chunks with context: the result stays close to the one-shot pass
    monkeypatch.setattr(feats, "TRANSFORMERS_CHUNK_S", 1.0)
    monkeypatch.setattr(feats, "TRANSFORMERS_CONTEXT_S", 0.5)
    chunked = feats.compute_features("hubert", samples, 16000, 75, 25.0).features
    assert chunked.shape == out.features.shape
    assert np.corrcoef(chunked.ravel(), out.features.ravel())[0, 1] > 0.9
