"""The mouth generator: redraws the mouth and chin of a render from mouth blendshapes predicted from the audio.

On CPU-length training the head field does not learn a mouth that follows new audio (docs/benchmarks.md, "Does
the head's mouth follow its audio?"), while the audio features predict the mouth's blendshapes well. So the mouth
is drawn in 2-D, in two small per-subject parts:

- :class:`MouthPredictor`: ridge regression from a window of per-frame audio features to the 27 jaw/mouth ARKit
  blendshapes (``MOUTH_BLENDSHAPE_NAMES``), standardised over the training frames, its output spread matched to the
  real mouth's on held-out frames (so gain 1 is right);
- :class:`MouthGenerator`: a U-Net that fills a fixed soft ellipse over lips and chin in a square crop, given the
  crop with the ellipse blanked out and the blendshapes (FiLM at its two coarsest levels).

The crop follows the face: centred below the lip corners, side proportional to the face width (cheek to cheek),
so the ellipse is the same in every crop and its shape says nothing about how open the mouth is. Training pairs
are the subject's own frames (context blurred, as a render's is); rendering uses the pose frame's landmarks.

    boxes = mouth_boxes(landmarks)                        # [B, 3] centre x, centre y, side (pixels)
    crops = crop(images, boxes, 64)                       # [B, 3, 64, 64]
    drawn = generator(crops * (1 - mask), shapes)         # mask = ellipse_mask(64)
    images = paste(images, drawn, boxes)                  # only the ellipse changes
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LIP_CORNERS = (61, 291)
CHEEKS = (234, 454)
BOX_SIDE = 0.85     # crop side / face width
BOX_DROP = 0.12     # crop centre below the lip corners / face width
ELLIPSE = (0.39, 0.36, 0.25)  # half width, half height (crop sides), feather (fraction of the radius)
# Renders scale the predicted blendshapes by this style knob. The predictor's own spread is matched to the real
# mouth's (MouthPredictor.scale), so 1 is right. Predictors fitted before that had none: ridge predictions of jawOpen
# spanned 0.35 of the real spread on held-out frames and renders used a gain of 2.5 (docs/benchmarks.md, "The mouth
# stage on the Macron clip"); they load with LEGACY_SCALE, so their renders do not change.
DEFAULT_GAIN = 1.0
LEGACY_SCALE = 2.5
MAX_SCALE = 4.0      # the variance-matching scale never exceeds this (a near-silent prediction is not blown up)
MIN_R = 0.1          # blendshapes predicted worse than this on held-out frames keep scale 1


def mouth_boxes(landmarks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Crop boxes ``[B, 3]`` (centre x, centre y, side; pixels) of landmarks ``[B, 478, >=2]`` (pixels)."""
    lm = (landmarks.float() if torch.is_tensor(landmarks) else torch.tensor(np.asarray(landmarks, np.float32)))
    lm = lm[..., :2]
    corners = lm[:, list(LIP_CORNERS)].mean(1)
    width = (lm[:, CHEEKS[1]] - lm[:, CHEEKS[0]]).norm(dim=-1)
    return torch.stack([corners[:, 0], corners[:, 1] + BOX_DROP * width, BOX_SIDE * width], -1)


def ellipse_mask(size: int, device=None) -> torch.Tensor:
    """``[size, size]`` in [0, 1]: 1 inside the ellipse over lips and chin, feathered to 0 at its edge."""
    t = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size - 0.5
    y, x = torch.meshgrid(t, t, indexing="ij")
    radius = ((x / ELLIPSE[0]) ** 2 + (y / ELLIPSE[1]) ** 2).sqrt()
    return ((1 - radius) / ELLIPSE[2]).clamp(0, 1)


def crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear ``size`` x ``size`` crops ``[B, C, size, size]`` of ``images`` ``[B, C, H, W]`` (zeros outside)."""
    b, _, h, w = images.shape
    t = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size - 0.5   # crop units
    boxes = boxes.to(images.device)
    px = boxes[:, 0:1] + t[None] * boxes[:, 2:3]          # [B, size] pixel x of each crop column
    py = boxes[:, 1:2] + t[None] * boxes[:, 2:3]
    gx = (2 * px / w - 1)[:, None, :].expand(b, size, size)
    gy = (2 * py / h - 1)[:, :, None].expand(b, size, size)
    return F.grid_sample(images, torch.stack([gx, gy], -1), align_corners=False)


def paste(images: torch.Tensor, drawn: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``images`` ``[B, C, H, W]`` with each crop's ellipse replaced by ``drawn`` ``[B, C, S, S]``."""
    b, _, h, w = images.shape
    size = drawn.shape[-1]
    boxes = boxes.to(images.device)
    x = (torch.arange(w, device=images.device, dtype=torch.float32) + 0.5)
    y = (torch.arange(h, device=images.device, dtype=torch.float32) + 0.5)
    # image pixel → crop grid coordinates in [-1, 1]
    gx = ((x[None] - boxes[:, 0:1]) / boxes[:, 2:3] * 2)[:, None, :].expand(b, h, w)
    gy = ((y[None] - boxes[:, 1:2]) / boxes[:, 2:3] * 2)[:, :, None].expand(b, h, w)
    grid = torch.stack([gx, gy], -1)
    mask = ellipse_mask(size, images.device).expand(b, 1, size, size)
    alpha = F.grid_sample(mask, grid, align_corners=False)          # zeros outside the crop
    return images * (1 - alpha) + F.grid_sample(drawn, grid, align_corners=False) * alpha


# ------------------------------------------------------------------------------------------------ the predictor
@dataclass
class MouthPredictor:
    """Ridge regression: audio features of frames ``t - radius .. t + radius`` (edges clamped) → blendshapes, each
    output's deviation from the training mean scaled by ``scale`` (variance matching: the spread of the held-out
    predictions becomes that of the real held-out blendshapes; a ridge shrinks it, by about 3x for jawOpen)."""

    radius: int
    mean: np.ndarray      # [D] feature mean over the training frames
    std: np.ndarray       # [D]
    weight: np.ndarray    # [(2 radius + 1) D, K]
    bias: np.ndarray      # [K]
    alpha: float
    scale: np.ndarray | None = None   # [K]; None: ones
    centre: np.ndarray | None = None  # [K] training mean of the targets (what scale stretches around); None: zeros

    @staticmethod
    def _windows(features: np.ndarray, frames, radius: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        features = features.detach().cpu().numpy() if torch.is_tensor(features) else features  # any device
        flat = (np.asarray(features, np.float64).reshape(len(features), -1) - mean) / std
        frames = np.asarray(list(frames), int)
        index = np.clip(frames[:, None] + np.arange(-radius, radius + 1)[None], 0, len(flat) - 1)
        return flat[index].reshape(len(frames), -1)

    def predict(self, features: np.ndarray, frames) -> np.ndarray:
        """``[len(frames), K]`` blendshapes (standardised units) of frames of a feature array ``[N, ...]``."""
        x = self._windows(features, frames, self.radius, self.mean, self.std)
        raw = x @ self.weight + self.bias
        if self.scale is not None:
            centre = self.centre if self.centre is not None else 0.0
            raw = centre + (raw - centre) * self.scale
        return raw.astype(np.float32)

    @classmethod
    def fit(cls, features: np.ndarray, train: list[int], targets: np.ndarray, val: list[int],
            val_targets: np.ndarray, radius: int = 3, alphas=(1e2, 1e3, 1e4, 1e5, 1e6)
            ) -> tuple[MouthPredictor, dict]:
        """Fit on ``train`` frames (``targets`` ``[len(train), K]``); pick the ridge strength with the best mean
        correlation on ``val`` (or the middle one without validation frames), then match each output's spread on
        ``val`` to the real one's (scale in [1, MAX_SCALE]; 1 where r < MIN_R or without validation frames).
        Returns the predictor and ``{"alpha", "val_r", "scale"}`` (per-blendshape Pearson r on val, NaN-free)."""
        features = features.detach().cpu().numpy() if torch.is_tensor(features) else features
        flat = np.asarray(features, np.float64).reshape(len(features), -1)
        mean, std = flat[train].mean(0), flat[train].std(0) + 1e-6
        x = cls._windows(features, train, radius, mean, std)
        y = np.asarray(targets, np.float64)
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        # dual form: (X Xᵀ + αI)⁻¹ — the windows are wider than there are training frames
        gram, best = xc @ xc.T, None
        xv = cls._windows(features, val, radius, mean, std) if len(val) else None
        for alpha in alphas if len(val) else alphas[len(alphas) // 2:len(alphas) // 2 + 1]:
            weight = xc.T @ np.linalg.solve(gram + alpha * np.eye(len(gram)), yc)
            r = _pearson((xv - x_mean) @ weight + y_mean, val_targets) if xv is not None else np.zeros(y.shape[1])
            if best is None or r.mean() > best[2].mean():
                best = (alpha, weight, r)
        alpha, weight, r = best
        bias = y_mean - x_mean @ weight
        scale = np.ones(y.shape[1])
        if xv is not None:
            spread = ((xv - x_mean) @ weight).std(0)
            real = np.asarray(val_targets, np.float64).std(0)
            matched = np.clip(real / np.maximum(spread, 1e-9), 1.0, MAX_SCALE)
            scale = np.where(r >= MIN_R, matched, 1.0)
        predictor = cls(radius, mean, std, weight, bias, float(alpha), scale=scale, centre=y_mean)
        return predictor, {"alpha": float(alpha), "val_r": r, "scale": scale}

    def state_dict(self) -> dict:
        return {"radius": self.radius, "mean": self.mean, "std": self.std, "weight": self.weight,
                "bias": self.bias, "alpha": self.alpha, "scale": self.scale, "centre": self.centre}

    @classmethod
    def from_state(cls, state: dict) -> MouthPredictor:
        """A predictor from :meth:`state_dict`; one saved before variance matching gets ``LEGACY_SCALE``, the gain
        its renders used, so they stay the same at the new default gain of 1."""
        state = dict(state)
        if "scale" not in state:
            state["scale"] = np.full(len(state["bias"]), LEGACY_SCALE)
            state["centre"] = np.zeros(len(state["bias"]))
        return cls(**state)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.maximum(np.sqrt((a * a).sum(0) * (b * b).sum(0)), 1e-12)


# ------------------------------------------------------------------------------------------------ the generator
def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    groups = math.gcd(8, cout)  # up to 8 groups that divide any width
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(groups, cout), nn.SiLU())


class MouthGenerator(nn.Module):
    """U-Net over a mouth crop: ``(crop with the ellipse blanked, blendshapes) → crop``.

    Args:
        n_shapes: blendshapes it is conditioned on; width: channels of the first level (doubling per level, three
        downsamplings, so the side must be a multiple of 8).
    """

    def __init__(self, n_shapes: int = 27, width: int = 24):
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_block(4, w), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 8 * w, 2)])
        self.film = nn.Sequential(nn.Linear(n_shapes, 64), nn.SiLU(), nn.Linear(64, 2 * (8 * w + 4 * w)))
        self.dec = nn.ModuleList([_block(8 * w + 4 * w, 4 * w), _block(4 * w + 2 * w, 2 * w), _block(2 * w + w, w)])
        self.out = nn.Conv2d(w, 3, 1)
        self.split = (8 * w, 8 * w, 4 * w, 4 * w)

    def forward(self, crops: torch.Tensor, shapes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``crops`` ``[B, 3, S, S]`` in [0, 1], ``shapes`` ``[B, K]`` → ``[B, 3, S, S]``: the crop with its
        ellipse drawn (outside the ellipse the input is kept exactly)."""
        mask = ellipse_mask(crops.shape[-1], crops.device)[None, None] if mask is None else mask
        x = torch.cat([crops * (1 - mask), mask.expand(len(crops), 1, -1, -1)], 1)
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
        g8, b8, g4, b4 = self.film(shapes).split(self.split, -1)
        x = x * (1 + g8[..., None, None]) + b8[..., None, None]
        for level, block in enumerate(self.dec):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips[-2 - level]], 1))
            if level == 0:
                x = x * (1 + g4[..., None, None]) + b4[..., None, None]
        drawn = torch.sigmoid(self.out(x))
        return crops * (1 - mask) + drawn * mask


@dataclass
class MouthModel:
    """A trained predictor + generator, as the mouth stage saves them."""

    predictor: MouthPredictor
    generator: MouthGenerator
    size: int

    @torch.no_grad()
    def redraw(self, images: torch.Tensor, landmarks: np.ndarray, shapes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``images`` ``[B, H, W, 3]`` (float, [0, 1]) with the mouth redrawn for ``shapes`` ``[B, K]``;
        ``landmarks`` ``[B, 478, >=2]`` in the images' pixels."""
        device = images.device
        boxes = mouth_boxes(landmarks).to(device)
        chw = images.permute(0, 3, 1, 2).clamp(0, 1)
        shapes = torch.as_tensor(np.asarray(shapes) if not torch.is_tensor(shapes) else shapes,
                                 dtype=torch.float32, device=device)
        drawn = self.generator(crop(chw, boxes, self.size), shapes)
        return paste(chw, drawn, boxes).permute(0, 2, 3, 1)


def load_mouth_model(workspace, device):
    """The mouth stage's model (EMA generator + predictor) of a workspace, or None when it has not run."""
    from pathlib import Path

    from synctalk.train.checkpoint import CheckpointManager

    ckpt = CheckpointManager(Path(workspace) / "checkpoints" / "mouth").load_latest(map_location=device)
    if ckpt is None or "predictor" not in ckpt:
        return None
    generator = MouthGenerator(**ckpt["generator_config"]).to(device)
    generator.load_state_dict(ckpt["ema"])
    generator.eval()
    return MouthModel(MouthPredictor.from_state(ckpt["predictor"]), generator, ckpt["size"])
