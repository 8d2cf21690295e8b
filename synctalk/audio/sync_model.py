"""The audio-visual sync model (AVE) of the Face-Sync Controller.

Two towers map an audio window and a video window of the same 0.2 s to 512-d embeddings whose cosine similarity
is high when the two are in sync:

- audio tower: a `[B, 1, 80, 16]` mel window (synctalk.audio.mel) → `[B, 512]`. Its layer layout is the
  Wav2Lip-SyncNet audio encoder (the layout of SyncTalk's `audio_visual_encoder.pth`), so such checkpoints load
  through `wav2lip_audio_keys` (key mapping documented there).
- visual tower: 5 consecutive grey lower-face crops `[B, 5, 48, 96]` (synctalk.audio.lips) → `[B, 512]`.

Each conv block is conv → batch norm → (+ input when residual) → ReLU.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from synctalk.errors import UserInputError

EMBED_DIM = 512
VIDEO_FRAMES = 5

# (in, out, kernel, stride, padding, residual); channels are scaled by `width` except the 512-d output.
AUDIO_LAYOUT: tuple[tuple[int, int, int, tuple[int, int], int, bool], ...] = (
    (1, 32, 3, (1, 1), 1, False),
    (32, 32, 3, (1, 1), 1, True),
    (32, 32, 3, (1, 1), 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, (1, 1), 1, True),
    (64, 64, 3, (1, 1), 1, True),
    (64, 128, 3, (3, 3), 1, False),
    (128, 128, 3, (1, 1), 1, True),
    (128, 128, 3, (1, 1), 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, (1, 1), 1, True),
    (256, 512, 3, (1, 1), 0, False),
    (512, 512, 1, (1, 1), 0, False),
)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel, stride, padding, residual: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.norm = nn.BatchNorm2d(c_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return F.relu(y + x if self.residual else y)


def _scaled(channels: int, width: float) -> int:
    return channels if channels in (1, EMBED_DIM) else max(8, int(round(channels * width)))


class AudioTower(nn.Module):
    """`[B, 80, 16]` or `[B, 1, 80, 16]` normalised mel windows → `[B, 512]` (non-negative, not normalised)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.blocks = nn.Sequential(*(
            ConvBlock(_scaled(ci, width), _scaled(co, width), k, s, p, r) for ci, co, k, s, p, r in AUDIO_LAYOUT))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() == 3:
            mel = mel[:, None]
        return self.blocks(mel).flatten(1)


class VisualTower(nn.Module):
    """`[B, 5, 48, 96]` grey lower-face crops in [0, 1] → `[B, 512]`."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [_scaled(n, width) for n in (32, 64, 128, 256)]
        self.blocks = nn.Sequential(
            ConvBlock(VIDEO_FRAMES, c[0], 5, 2, 2),     # 24 x 48
            ConvBlock(c[0], c[0], 3, 1, 1, True),
            ConvBlock(c[0], c[1], 3, 2, 1),             # 12 x 24
            ConvBlock(c[1], c[1], 3, 1, 1, True),
            ConvBlock(c[1], c[2], 3, 2, 1),             # 6 x 12
            ConvBlock(c[2], c[2], 3, 1, 1, True),
            ConvBlock(c[2], c[3], 3, 2, 1),             # 3 x 6
            ConvBlock(c[3], c[3], 3, 1, 1, True),
            ConvBlock(c[3], EMBED_DIM, (3, 6), 1, 0),   # 1 x 1
            ConvBlock(EMBED_DIM, EMBED_DIM, 1, 1, 0),
        )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.blocks(crops - 0.5).flatten(1)


@dataclass
class SyncModelConfig:
    audio_width: float = 1.0    # 1.0 = the Wav2Lip/SyncTalk AVE layout (needed to load their checkpoints)
    visual_width: float = 1.0


class SyncModel(nn.Module):
    """Both towers and the similarity temperature. `similarity(a, v)` = cosine · exp(logit_scale)."""

    def __init__(self, config: SyncModelConfig | None = None):
        super().__init__()
        self.config = config or SyncModelConfig()
        self.audio = AudioTower(self.config.audio_width)
        self.visual = VisualTower(self.config.visual_width)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # exp(2.3) ≈ 10, learnt

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Unit-norm audio embeddings `[B, 512]`."""
        return F.normalize(self.audio(mel), dim=1)

    def embed_visual(self, crops: torch.Tensor) -> torch.Tensor:
        """Unit-norm visual embeddings `[B, 512]`; crops `[B, 5, 48, 96]` float in [0, 1]."""
        return F.normalize(self.visual(crops), dim=1)


# ---------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "synctalk-sync"


def save_sync_model(model: SyncModel, path: str | Path, **extra) -> None:
    from synctalk.io.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "config": asdict(model.config),
                    "state_dict": model.state_dict(), **extra}, tmp)


def load_sync_model(path: str | Path, device="cpu") -> SyncModel:
    """Load a checkpoint written by `synctalk sync-train` / `save_sync_model`, or a Wav2Lip-layout audio encoder
    (SyncTalk's `audio_visual_encoder.pth`): then only the audio tower is loaded and the visual tower is unusable
    (`model.has_visual` is False)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: sync checkpoint not found (train one with `synctalk sync-train` or drop "
                             "the path to use the subject's own clip)")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means a bad file
        raise UserInputError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        model = SyncModel(SyncModelConfig(**data["config"]))
        model.load_state_dict(data["state_dict"])
        model.has_visual = True
    else:
        model = SyncModel()
        model.audio.load_state_dict(wav2lip_audio_keys(data, path))
        model.has_visual = False
    return model.to(device).eval()


_WAV2LIP_KEY = re.compile(r"^(?:module\.)?(?:audio_encoder\.)?(\d+)\.conv_block\.([01])\.(.+)$")


def wav2lip_audio_keys(state: dict, source: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a Wav2Lip-SyncNet audio-encoder state dict to `AudioTower` keys.

    Accepted source keys (optionally wrapped in {"state_dict": ...} or {"model": ...}, optional "module."
    prefix from DataParallel, optional "audio_encoder." prefix from a full SyncNet):

        {i}.conv_block.0.{weight,bias}                                  → blocks.{i}.conv.{weight,bias}
        {i}.conv_block.1.{weight,bias,running_mean,running_var,num_batches_tracked} → blocks.{i}.norm.{...}

    Keys of other modules (a SyncNet's face_encoder) are ignored. Raises UserInputError naming what is missing.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UserInputError(f"{source}: expected a state dict, got {type(state).__name__}")
    mapped = {}
    for key, value in state.items():
        match = _WAV2LIP_KEY.match(key)
        if match and not key.startswith(("face_encoder", "module.face_encoder")):
            index, part, name = match.groups()
            mapped[f"blocks.{index}.{'conv' if part == '0' else 'norm'}.{name}"] = value
    expected = set(AudioTower().state_dict())
    missing = sorted(expected - set(mapped))
    if missing:
        raise UserInputError(f"{source}: not a Wav2Lip/SyncTalk audio-encoder checkpoint: {len(missing)} of "
                             f"{len(expected)} tensors missing (e.g. {missing[0]}); found keys like "
                             f"{', '.join(list(state)[:3])}")
    return {k: v for k, v in mapped.items() if k in expected}
