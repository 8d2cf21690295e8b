"""Sync model: shapes, our checkpoints, and loading Wav2Lip/SyncTalk-layout audio encoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synctalk.audio.sync_model import SyncModel, SyncModelConfig, load_sync_model, save_sync_model
from synctalk.errors import UserInputError


class _Wav2LipConv(nn.Module):
    """The published Wav2Lip block: conv_block = (Conv2d, BatchNorm2d), ReLU after the optional residual."""

    def __init__(self, cin, cout, kernel, stride, padding, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return torch.relu(out + x if self.residual else out)


def _wav2lip_audio_encoder() -> nn.Sequential:
    # written out from the Wav2Lip SyncNet audio encoder, independently of our AUDIO_LAYOUT
    return nn.Sequential(
        _Wav2LipConv(1, 32, 3, 1, 1), _Wav2LipConv(32, 32, 3, 1, 1, True), _Wav2LipConv(32, 32, 3, 1, 1, True),
        _Wav2LipConv(32, 64, 3, (3, 1), 1), _Wav2LipConv(64, 64, 3, 1, 1, True),
        _Wav2LipConv(64, 64, 3, 1, 1, True), _Wav2LipConv(64, 128, 3, 3, 1),
        _Wav2LipConv(128, 128, 3, 1, 1, True), _Wav2LipConv(128, 128, 3, 1, 1, True),
        _Wav2LipConv(128, 256, 3, (3, 2), 1), _Wav2LipConv(256, 256, 3, 1, 1, True),
        _Wav2LipConv(256, 512, 3, 1, 0), _Wav2LipConv(512, 512, 1, 1, 0))


def _randomised(module: nn.Module) -> nn.Module:
    """Random weights and batch-norm statistics, so a wrong mapping cannot give the same outputs."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return module.eval()


@pytest.mark.parametrize("prefix", ["", "audio_encoder.", "module.audio_encoder."])
def test_wav2lip_layout_checkpoint_loads_through_the_key_mapping(tmp_path, prefix):
    reference = _randomised(_wav2lip_audio_encoder())
    state = {prefix + k: v for k, v in reference.state_dict().items()}
    if prefix.startswith("module."):  # a full SyncNet saved from DataParallel, wrapped like Wav2Lip's trainer
        state["module.face_encoder.0.conv_block.0.weight"] = torch.zeros(3)
        state = {"state_dict": state, "global_step": 10}
    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(state, path)
    model = load_sync_model(path)
    assert model.has_visual is False
    mel = torch.randn(3, 1, 80, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.audio(mel), reference(mel).flatten(1))


def test_wrong_checkpoints_are_explained(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(UserInputError, match="not a Wav2Lip/SyncTalk audio-encoder checkpoint"):
        load_sync_model(path)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="not a readable PyTorch checkpoint"):
        load_sync_model(tmp_path / "garbage.pt")
    with pytest.raises(UserInputError, match="not found"):
        load_sync_model(tmp_path / "missing.pt")


def test_towers_and_our_checkpoint_round_trip(tmp_path):
    model = SyncModel(SyncModelConfig(audio_width=0.25, visual_width=0.25)).eval()
    mel, crops = torch.randn(4, 80, 16), torch.rand(4, 5, 48, 96)
    audio, video = model.embed_audio(mel), model.embed_visual(crops)
    assert audio.shape == video.shape == (4, 512)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(4))
    save_sync_model(model, tmp_path / "sync.pt")
    loaded = load_sync_model(tmp_path / "sync.pt")
    assert loaded.has_visual and loaded.config == model.config
    torch.testing.assert_close(loaded.embed_visual(crops), video)
