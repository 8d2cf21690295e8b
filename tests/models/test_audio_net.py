"""AudioNet: windows with edge clamping (hand-checked), shapes for every feature backend, temporal attention."""

from __future__ import annotations

import pytest
import torch

from synctalk.models.audio_net import AudioNet, feature_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_feature_windows_clamps_at_the_edges():
    features = torch.arange(5, dtype=torch.float32)[:, None] * torch.ones(1, 2)  # row i = [i, i]
    windows = feature_windows(features, torch.tensor([0, 4, 2]), window=4)
    assert windows.shape == (3, 4, 2)
    # W = 4: frames i-2 .. i+1, clamped into [0, 4]
    torch.testing.assert_close(windows[..., 0], torch.tensor([[0.0, 0, 0, 1], [2, 3, 4, 4], [0, 1, 2, 3]]))
    odd = feature_windows(features, torch.tensor([0, 4]), window=3)  # i-1 .. i+1
    torch.testing.assert_close(odd[..., 1], torch.tensor([[0.0, 0, 1], [3, 4, 4]]))
    single = feature_windows(features, torch.tensor([3]), window=1)
    torch.testing.assert_close(single, features[3][None, None])


def test_feature_windows_keeps_trailing_shape_and_checks_indices():
    mel = torch.randn(6, 80, 16)
    windows = feature_windows(mel, torch.tensor([5]), window=8)  # frames 1..8 → 1..5 then 5, 5, 5
    assert windows.shape == (1, 8, 80, 16)
    torch.testing.assert_close(windows[0, 0], mel[1])
    torch.testing.assert_close(windows[0, 7], mel[5])
    with pytest.raises(IndexError, match="\\[0, 6\\)"):
        feature_windows(mel, torch.tensor([6]), window=8)
    with pytest.raises(ValueError, match="window"):
        feature_windows(mel, torch.tensor([0]), window=0)


@pytest.mark.parametrize("feature_shape", [(512,), (1024,), (80, 16), (29, 16)])
def test_output_shapes_and_attention_weights(feature_shape):
    torch.manual_seed(0)
    net = AudioNet(feature_shape, window=8, code_dim=32)
    windows = torch.randn(3, 8, *feature_shape)
    codes, weights = net(windows, return_weights=True)
    assert codes.shape == (3, 32)
    assert net.encode_frames(windows).shape == (3, 8, 32)
    assert weights.shape == (3, 8)
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))


def test_window_of_one_repeated_frame_gives_that_frames_code():
    # the output is a convex combination of the frame codes: identical frames → exactly that code
    torch.manual_seed(0)
    net = AudioNet((512,), window=8, code_dim=32)
    frame = torch.randn(2, 1, 512)
    codes = net(frame.expand(2, 8, 512))
    single = net.encode_frames(frame.expand(2, 8, 512))[:, 0]
    torch.testing.assert_close(codes, single, rtol=1e-5, atol=1e-6)


def test_frame_encoder_is_per_frame():
    torch.manual_seed(0)
    net = AudioNet((80, 16), window=4)
    windows = torch.randn(1, 4, 80, 16)
    changed = windows.clone()
    changed[0, 0] += 1.0
    before, after = net.encode_frames(windows), net.encode_frames(changed)
    assert not torch.allclose(before[0, 0], after[0, 0])
    torch.testing.assert_close(before[0, 1:], after[0, 1:])


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="1-D \\[D\\] or 2-D"):
        AudioNet((2, 3, 4))
    net = AudioNet((512,), window=8)
    with pytest.raises(ValueError, match="\\[B, 8, 512\\]"):
        net(torch.randn(2, 4, 512))
