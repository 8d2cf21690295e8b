"""The official SyncNet (Chung & Zisserman, "Out of time", ACCV 2016 workshops) as an optional sync judge.

Published architecture of `syncnet_v2.model` (from the authors' syncnet_python release): an audio CNN on
13 MFCC x 20 steps (0.2 s at 100 Hz) and a 3D-conv lip CNN on 5 colour frames of 224 x 224, each followed by an
MLP to 1024-d; distances are Euclidean on the raw 1024-d outputs (so LSE-D values are on the scale the papers
report, unlike our unit-norm embeddings). The module names below are the checkpoint's keys.

Inputs we feed it: the face crop is a square around the Face Landmarker's face box enlarged 1.4x (the original
pipeline uses an S3FD box with 40% padding), BGR 0-255 like the original (OpenCV-read frames), and MFCCs from
`python_speech_features` with its defaults, which is what the original evaluation used.
The user supplies the weights: put `syncnet_v2.model` in the asset cache folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from synctalk.audio.sync_data import HALF, SyncClip
from synctalk.errors import UserInputError

FACE_SIZE = 224
MFCC_RATE_HZ = 100
FACE_SCALE = 1.4


def _conv2d(c_in, c_out, kernel, padding, pool=None):
    layers = [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool2d(*pool)] if pool else [])


def _conv3d(c_in, c_out, kernel, stride=1, padding=0, pool=None):
    layers = [nn.Conv3d(c_in, c_out, kernel, stride, padding), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]
    return layers + ([nn.MaxPool3d(*pool)] if pool else [])


def _mlp(out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, out_dim))


class SyncNetV2(nn.Module):
    """MFCC `[B, 1, 13, 20]` → `[B, 1024]`; BGR frames `[B, 3, 5, 224, 224]` (0-255) → `[B, 1024]`."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, 64, 3, 1, pool=((1, 1), (1, 1))),
            *_conv2d(64, 192, 3, 1, pool=((3, 3), (1, 2))),
            *_conv2d(192, 384, 3, 1),
            *_conv2d(384, 256, 3, 1),
            *_conv2d(256, 256, 3, 1, pool=((3, 3), (2, 2))),
            *_conv2d(256, 512, (5, 4), 0),
        )
        self.netfcaud = _mlp(embed_dim)
        self.netfclip = _mlp(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0, pool=((1, 3, 3), (1, 2, 2))),
            *_conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1)),
            *_conv3d(256, 256, (1, 3, 3), 1, (0, 1, 1), pool=((1, 3, 3), (1, 2, 2))),
            *_conv3d(256, 512, (1, 6, 6), 1, 0),
        )

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_video(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


class SyncNetJudge:
    """Adapter that lets `score_clip` use SyncNetV2 on a SyncClip with `faces` and `samples`."""

    def __init__(self, net: SyncNetV2, device: str | torch.device = "cpu"):
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    @torch.no_grad()
    def video_embeddings(self, clip: SyncClip, frames: np.ndarray) -> torch.Tensor:
        if clip.faces is None:
            raise UserInputError(f"{clip.name}: the official SyncNet needs colour face crops; build the clip with "
                                 "faces=True")
        index = frames[:, None] + np.arange(-HALF, HALF + 1)[None, :]            # [B, 5]
        bgr = clip.faces[index][..., ::-1]                                        # [B, 5, 224, 224, 3]
        video = torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 4, 1, 2, 3))).float()
        return self.net.forward_video(video.to(self.device)).cpu()

    @torch.no_grad()
    def audio_embeddings(self, clip: SyncClip, frames: np.ndarray) -> torch.Tensor:
        if clip.samples is None:
            raise UserInputError(f"{clip.name}: the official SyncNet needs the raw audio samples of the clip")
        mfcc = clip_mfcc(clip)                                                    # [T, 13]
        starts = np.round((frames - HALF) * MFCC_RATE_HZ / clip.fps).astype(np.int64)
        index = starts[:, None] + np.arange(20)[None, :]
        inside = (index >= 0) & (index < len(mfcc))
        windows = np.where(inside[..., None], mfcc[np.clip(index, 0, len(mfcc) - 1)], 0.0)  # [B, 20, 13]
        x = torch.from_numpy(windows.transpose(0, 2, 1)[:, None].astype(np.float32))
        return self.net.forward_audio(x.to(self.device)).cpu()


def clip_mfcc(clip: SyncClip) -> np.ndarray:
    """13 MFCCs at 100 Hz (python_speech_features defaults, as the SyncNet evaluation), cached on the clip."""
    if clip.mfcc is None:
        import python_speech_features

        clip.mfcc = python_speech_features.mfcc(clip.samples * 32768.0, 16000).astype(np.float32)
    return clip.mfcc


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNetJudge:
    """Load `syncnet_v2.model` (a state dict with netcnnaud/netfcaud/netcnnlip/netfclip keys)."""
    path = Path(path)
    if not path.is_file():
        from synctalk.assets import cache_dir

        raise UserInputError(f"{path}: not found. The official SyncNet weights are not downloaded automatically; "
                             f"put syncnet_v2.model (from the authors' syncnet_python release) at "
                             f"{cache_dir() / 'syncnet_v2.model'}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = SyncNetV2()
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    if missing or any(state[k].shape != v.shape for k, v in expected.items()):
        raise UserInputError(f"{path}: not a syncnet_v2 state dict ({len(missing)} tensors missing or of another "
                             f"shape, e.g. {(missing or list(expected))[0]})")
    net.load_state_dict({k: state[k] for k in expected})
    return SyncNetJudge(net, device)
