"""Sync scoring protocol on a synthetic case, and sync-model training: resume, interruption, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.audio.score import score_clip
from synctalk.audio.sync_data import PairSampler, audio_windows
from synctalk.config import SyncTrainConfig


class LoudnessJudge:
    """A hand-made judge: the 5 per-frame mouth brightnesses vs the audio loudness of the same 5 frames."""

    training = False

    def train(self, mode=True):
        return self

    def eval(self):
        return self

    @staticmethod
    def _unit(x):
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def video_embeddings(self, clip, frames):
        index = frames[:, None] + np.arange(-2, 3)[None, :]
        return self._unit(torch.from_numpy(clip.crops[index].mean((2, 3))).float())

    def audio_embeddings(self, clip, frames):
        loudness = audio_windows(clip, frames).mean(1)  # [B, 16] mel frames around each frame's centre
        return self._unit(loudness[:, [1, 5, 8, 11, 14]])  # one mel frame inside each of the 5 video frames


@pytest.mark.parametrize("delay", [0, 4, -3])
def test_offset_and_confidence_on_a_synthetic_clip(delay, synthetic_clip):
    clip = synthetic_clip().delayed(delay) if delay else synthetic_clip()
    score = score_clip(LoudnessJudge(), clip.subset(20, 180))
    assert score.offset == -delay  # audio late by d frames is reported as -d (SyncNet convention)
    assert score.curve.shape == (31,) and score.lse_d == pytest.approx(score.curve.min())
    assert score.lse_c == pytest.approx(np.median(score.curve) - score.curve.min())
    assert score.lse_c > 0.5 and score.lse_d < 0.3
    assert (score.window_offset == -delay).mean() > 0.9
    summary = score.summary()
    assert summary["offset_frames"] == -delay and len(summary["curve"]) == 31


def test_sampler_pairs_and_negatives_stay_in_the_allowed_frames(synthetic_clip):
    clip = synthetic_clip().subset(0, 100)
    sampler = PairSampler([clip], batch_size=32, seed=3)
    batch = sampler.batch()
    assert batch["video"].shape == (32, 5, 48, 96) and batch["audio"].shape == (32, 80, 16)
    t = batch["clip_time"][:, 1].numpy()
    assert t.min() >= 2 and t.max() < 98
    shift = batch["negative_offset"].abs().numpy()
    assert shift.min() >= 5 and shift.max() <= 15


def _train(clip, tmp_path, name, steps, **kwargs):
    from synctalk.audio.sync_train import train_sync_model

    cfg = SyncTrainConfig(width=0.125, batch_size=8, max_steps=steps, eval_every=2, checkpoint_every_s=1e9)
    return train_sync_model([clip.subset(0, 150)], tmp_path / name, cfg, held_out=[clip.subset(150, 200)],
                            progress=False, **kwargs)


def test_training_resumes_exactly_after_an_interruption(tmp_path, monkeypatch, synthetic_clip):
    clip = synthetic_clip()
    straight = _train(clip, tmp_path, "straight.pt", 4)
    assert straight.steps == 4 and [h["step"] for h in straight.history] == [2, 4]

    calls = {"n": 0}
    original = PairSampler.batch

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(PairSampler, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(clip, tmp_path, "resumed.pt", 4)
    saved = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert saved["train"]["step"] == 2 and not saved["finished"]
    monkeypatch.setattr(PairSampler, "batch", original)
    resumed = _train(clip, tmp_path, "resumed.pt", 4)
    assert resumed.steps == 4
    a = torch.load(tmp_path / "straight.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=False)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    # another tag (other inputs) starts over instead of resuming
    fresh = _train(clip, tmp_path, "resumed.pt", 2, tag="other")
    assert fresh.steps == 2


def test_cli_trains_on_a_subject_and_scores_it(tmp_path, make_subject, capsys):
    """sync-train on a subject directory (with KEY=VALUE overrides after the corpus) and sync-score on it."""
    from synctalk.cli.main import main
    from synctalk.io.media import write_wav

    root = make_subject(n_frames=40, size=(64, 64))
    t = np.arange(int(40 / 25 * 16000)) / 16000
    write_wav(root / "audio.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0))
              .astype(np.float32))
    out = tmp_path / "sync.pt"
    assert main(["sync-train", str(root), "-o", str(out), "--steps", "2", "sync.width=0.125", "sync.batch_size=4",
                 "-q"]) == 0
    assert "2 steps" in capsys.readouterr().out
    assert main(["sync-score", str(root), "--model", str(out), "--max-offset", "3", "--json", "-q"]) == 0
    assert '"offset_frames"' in capsys.readouterr().out
    assert main(["sync-train", str(tmp_path / "nothing"), "-o", str(out), "-q"]) == 2
