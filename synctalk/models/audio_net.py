"""Audio conditioning: a window of per-frame audio features → one audio code per frame (ER-NeRF / SyncTalk style).

Every backend of ``audio_features.npy`` (docs/audio.md) works: ``[512]`` (ave), ``[1024]`` (hubert), ``[768]``
(wav2vec2), any other 1-D size, and ``[80, 16]`` mel windows (2-D: channels × time)::

    windows = feature_windows(features, frame_indices, window=8)   # [B, 8, *feature_shape]
    codes = AudioNet(features.shape[1:])(windows)                   # [B, 32]

The network has two stages:

1. a per-frame encoder (shared over the window): an MLP for 1-D features; for 2-D ``[C, T]`` windows a small 1-D
   convolution over the T axis (C as channels) followed by an MLP. Each frame becomes a ``code_dim`` vector.
2. temporal attention (ER-NeRF's ``AudioAttNet``): a 1-D conv net along the window of W codes gives one score per
   frame, a linear layer mixes the W scores, a softmax turns them into weights over W, and the output is the
   weighted sum of the W codes. It smooths the code over time while letting the net pick which neighbours matter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AudioNet", "feature_windows"]


def feature_windows(features: Tensor, indices: Tensor, window: int) -> Tensor:
    """Windows of ``window`` consecutive frames' features centred on each index, clamped at the clip's ends.

    Frame ``i``'s window is frames ``i - window // 2 … i - window // 2 + window - 1`` (for W = 8: ``i-4 … i+3``; for
    odd W symmetric, e.g. W = 3: ``i-1 … i+1``), each clamped into ``[0, N-1]`` so the first and last frames repeat.

    Args:
        features: [N, ...] per-frame features (any trailing shape).
        indices: [B] int frame indices in ``[0, N)``.
        window: W >= 1.

    Returns:
        [B, W, ...].

    Example: N = 5, window = 4, indices [0, 4] → frame indices [[0, 0, 0, 1], [2, 3, 4, 4]].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    indices = torch.as_tensor(indices, device=features.device).long().reshape(-1)
    n_frames = features.shape[0]
    if n_frames == 0:
        raise ValueError("feature_windows: features is empty (no frames)")
    if indices.numel() and indices.device.type == "cpu":
        if int(indices.min()) < 0 or int(indices.max()) >= n_frames:
            raise IndexError(f"frame indices must lie in [0, {n_frames}), got {int(indices.min())}.."
                             f"{int(indices.max())}")
    elif indices.numel():  # on an accelerator the check must not make the host wait for the device
        torch._assert_async(((indices >= 0) & (indices < n_frames)).all(), f"frame indices must lie in [0, {n_frames})")
    offsets = torch.arange(window, device=features.device) - window // 2  # [W]
    frames = (indices[:, None] + offsets[None, :]).clamp(0, n_frames - 1)  # [B, W]
    return features[frames]


def _mlp(sizes: list[int], slope: float = 0.02) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class _ConvFrameEncoder(nn.Module):
    """[B, C, T] windows (e.g. 80 mel bands × 16 mel frames) → [B, code_dim]: stride-2 convs over T, then an MLP."""

    def __init__(self, channels: int, length: int, code_dim: int, conv_channels: int = 64, hidden: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        size_in = channels
        # halve T until it is at most 4: a 16-frame mel window (0.2 s) becomes 4 steps of 50 ms
        while length > 4:
            layers += [nn.Conv1d(size_in, conv_channels, 3, stride=2, padding=1), nn.LeakyReLU(0.02)]
            size_in, length = conv_channels, (length + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.mlp = _mlp([size_in * length, hidden, code_dim])

    def forward(self, windows: Tensor) -> Tensor:
        return self.mlp(self.convs(windows).flatten(1))


class AudioNet(nn.Module):
    """Per-frame audio encoder + temporal attention: ``[B, W, *feature_shape]`` → ``[B, code_dim]``.

    Args:
        feature_shape: trailing shape of one frame's features: ``(D,)`` (ave 512, hubert 1024, ...) or ``(C, T)``
            (mel 80 × 16).
        window: W, frames per window (see :func:`feature_windows`).
        code_dim: size of the audio code (the head field's audio input, 32 in ER-NeRF/SyncTalk).
        hidden: width of the per-frame MLP.

    The per-frame codes are unbounded (no final activation), as in ER-NeRF; the head field's attention scales them.
    """

    def __init__(self, feature_shape: tuple[int, ...], window: int = 8, code_dim: int = 32, hidden: int = 256):
        super().__init__()
        feature_shape = tuple(int(size) for size in feature_shape)
        if window < 1 or code_dim < 1:
            raise ValueError(f"window and code_dim must be >= 1, got {window}, {code_dim}")
        self.feature_shape, self.window, self.code_dim = feature_shape, window, code_dim
        if len(feature_shape) == 1:
            self.frame_encoder: nn.Module = _mlp([feature_shape[0], hidden, hidden // 2, code_dim])
        elif len(feature_shape) == 2:
            self.frame_encoder = _ConvFrameEncoder(feature_shape[0], feature_shape[1], code_dim,
                                                   hidden=hidden // 2)
        else:
            raise ValueError(f"AudioNet: per-frame features must be 1-D [D] or 2-D [C, T] (e.g. mel [80, 16]), got "
                             f"shape {feature_shape}")
        # ER-NeRF AudioAttNet: convs along the window with the code channels shrinking to one score per frame
        self.attention_convs = nn.Sequential(
            nn.Conv1d(code_dim, 16, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(16, 8, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(8, 4, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(4, 2, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(2, 1, 3, padding=1), nn.LeakyReLU(0.02),
        )
        self.attention_mix = nn.Linear(window, window)

    def encode_frames(self, windows: Tensor) -> Tensor:
        """Per-frame codes: windows [B, W, *feature_shape] → [B, W, code_dim]."""
        self._check(windows)
        batch = windows.shape[0]
        frames = windows.reshape(batch * self.window, *self.feature_shape)
        return self.frame_encoder(frames).reshape(batch, self.window, self.code_dim)

    def attention_weights(self, codes: Tensor) -> Tensor:
        """Temporal attention: codes [B, W, code_dim] → weights [B, W] (softmax: non-negative, sum 1 over W)."""
        scores = self.attention_convs(codes.transpose(1, 2))[:, 0]  # [B, W]
        return torch.softmax(self.attention_mix(scores), dim=-1)

    def forward(self, windows: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """windows [B, W, *feature_shape] → codes [B, code_dim] (and the attention weights [B, W] if asked)."""
        codes = self.encode_frames(windows)  # [B, W, C]
        weights = self.attention_weights(codes)  # [B, W]
        mixed = (weights[..., None] * codes).sum(1)  # [B, C]
        return (mixed, weights) if return_weights else mixed

    def _check(self, windows: Tensor) -> None:
        expected = (self.window, *self.feature_shape)
        if windows.dim() != len(expected) + 1 or tuple(windows.shape[1:]) != expected:
            raise ValueError(f"AudioNet expects windows [B, {', '.join(map(str, expected))}] (B windows of "
                             f"{self.window} frames of {self.feature_shape} features), got {tuple(windows.shape)}")

    def extra_repr(self) -> str:
        return f"feature_shape={self.feature_shape}, window={self.window}, code_dim={self.code_dim}"
