"""Official SyncNet judge: the published architecture loads a syncnet_v2-layout state dict and scores a clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.audio.score import load_judge, score_clip
from synctalk.audio.syncnet import SyncNetV2, load_syncnet
from synctalk.errors import UserInputError


def test_random_weights_load_and_score(tmp_path, synthetic_clip):
    torch.manual_seed(0)
    net = SyncNetV2()
    keys = set(net.state_dict())
    assert {"netcnnaud.0.weight", "netfcaud.3.weight", "netcnnlip.0.weight", "netfclip.3.bias"} <= keys
    torch.save(net.state_dict(), tmp_path / "syncnet_v2.model")
    judge = load_judge(tmp_path / "syncnet_v2.model")
    with torch.no_grad():
        assert judge.net.forward_audio(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert judge.net.forward_video(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)
    clip = synthetic_clip(n_frames=40)
    rng = np.random.default_rng(0)
    clip.faces = rng.integers(0, 255, (40, 224, 224, 3), dtype=np.uint8)
    clip.samples = rng.normal(0, 0.1, 40 * 640).astype(np.float32)
    score = score_clip(judge, clip, max_offset=2, frames=np.arange(10, 14))
    assert score.curve.shape == (5,) and np.isfinite(score.curve).all() and score.lse_c >= 0
    assert clip.mfcc.shape[1] == 13 and abs(len(clip.mfcc) - 40 * 4) <= 1  # 100 Hz MFCCs


def test_wrong_files(tmp_path):
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(UserInputError, match="not a syncnet_v2 state dict"):
        load_syncnet(tmp_path / "bad.model")
    with pytest.raises(UserInputError, match="syncnet_v2.model"):
        load_syncnet(tmp_path / "missing.model")
