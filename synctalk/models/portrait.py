"""Portrait-Sync Generator: the rendered face pasted back into the original full-resolution footage.

    mask = face_mask(landmarks, side)                       # soft inner-face mask at crop resolution [S, S]
    frame = paste_back(render, original, crop, mask)         # colour-matched blend, original size [H, W, 3]
    frame = restorer.restore(frame_crop, render_up, mask)   # optional: learnt seam / chin repair

The mask is the convex hull of the face mesh, extended below the chin (``chin_margin`` of the face height) so a
jaw that opens lower than in the pose frame never leaves a second chin of the original footage, shrunk by the
feather width and blurred, so the seam runs inside the face. Colours are matched by the mean difference in the
feather band (where render and footage both show the same skin).

:class:`Restorer` is a small per-subject U-Net. It sees the pasted crop, the upsampled render and the mask and
adds a residual inside the *repair region* (the feather band and the chin/neck area below the face), which is
where paste-back shows: a visible mask edge, a chin of the wrong height, the torso model's softer neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Crop", "Restorer", "face_mask", "match_colour", "paste_back", "repair_region"]

CHIN = 152
FOREHEAD = 10


@dataclass(frozen=True)
class Crop:
    """Where the subject's square frames come from in the source video: ``side`` pixels from (x0, y0)."""

    x0: int
    y0: int
    side: int

    @classmethod
    def from_meta(cls, meta: dict, root=None) -> Crop:
        """The crop in a subject's meta.json (`root`: the subject folder, named in the error)."""
        if "crop" not in meta:
            from synctalk.data.subject import repair_hint
            from synctalk.errors import DatasetError

            hint = repair_hint(root, "frames") if root is not None else \
                "redo its frames step with `synctalk preprocess VIDEO -o SUBJECT --force frames`"
            raise DatasetError(f"{root or 'the subject'}: meta.json records no crop of the original video (made by an "
                               f"older preprocess?), which portrait paste-back needs; {hint}")
        crop = meta["crop"]
        return cls(int(crop["x0"]), int(crop["y0"]), int(crop["side"]))


def face_mask(landmarks: np.ndarray, size: int, side: int, chin_margin: float = 0.12,
              feather: float = 0.04) -> np.ndarray:
    """Soft inner-face mask ``[side, side]`` float32 in [0, 1].

    Args:
        landmarks: [478, 2+] face-mesh points in subject pixels (a ``size`` x ``size`` frame).
        side: the mask's resolution (the crop side in the source video).
        chin_margin: how far below the chin the mask reaches, as a fraction of the forehead-to-chin height.
        feather: blur sigma as a fraction of that height; the hull is shrunk by 2 sigma first, so the mask is 0 at
            the hull's edge and 1 from ~4 sigma inside it.
    """
    import cv2

    points = np.asarray(landmarks, np.float64)[:, :2] * (side / size)
    height = float(np.linalg.norm(points[CHIN] - points[FOREHEAD])) or side * 0.3
    lower = points[points[:, 1] > points[:, 1].mean()]
    hull = cv2.convexHull(np.concatenate([points, lower + [0, chin_margin * height]]).astype(np.float32))
    mask = np.zeros((side, side), np.float32)
    cv2.fillConvexPoly(mask, hull.round().astype(np.int32), 1.0)
    sigma = max(feather * height, 0.5)
    radius = int(round(2 * sigma))
    if radius > 0:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def repair_region(mask: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """``[S, S]`` float in [0, 1]: where the restorer may change pixels: the mask's feather band, widened, and the
    chin and neck below the face."""
    import cv2

    side = mask.shape[0]
    band = ((mask > 0.02) & (mask < 0.98)).astype(np.float32)
    points = np.asarray(landmarks, np.float64)[:, :2] * (side / size)
    height = float(np.linalg.norm(points[CHIN] - points[FOREHEAD])) or side * 0.3
    k = max(3, int(round(0.06 * height)) | 1)
    band = cv2.dilate(band, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    chin = points[CHIN]
    x_lo, x_hi = points[:, 0].min(), points[:, 0].max()
    y_lo, y_hi = chin[1] - 0.15 * height, chin[1] + 0.45 * height
    neck = np.zeros_like(band)
    neck[int(max(y_lo, 0)):int(min(y_hi, side)), int(max(x_lo, 0)):int(min(x_hi, side))] = 1
    return cv2.GaussianBlur(np.maximum(band, neck), (0, 0), max(k / 4, 0.5))


def match_colour(render: np.ndarray, original: np.ndarray, mask: np.ndarray, max_shift: float = 0.15) -> np.ndarray:
    """``render`` (float [S, S, 3] in [0, 1]) shifted by the per-channel mean difference to ``original`` inside
    the mask's feather band (at most ``max_shift``)."""
    band = (mask > 0.05) & (mask < 0.95)
    if band.sum() < 16:
        return render
    shift = np.clip(original[band].mean(0) - render[band].mean(0), -max_shift, max_shift)
    return np.clip(render + shift, 0, 1)


def paste_back(render: np.ndarray, original: np.ndarray, crop: Crop, mask: np.ndarray,
               colour_match: bool = True) -> np.ndarray:
    """Blend a rendered frame into the original frame.

    Args:
        render: uint8 or float [s, s, 3] (the subject's resolution).
        original: uint8 [H, W, 3] source video frame.
        crop: where the subject frame sits in the source frame.
        mask: [S, S] float from :func:`face_mask` (S = crop.side).

    Returns:
        uint8 [H, W, 3]: the original with the masked face replaced. Parts of the crop outside the frame are
        ignored.
    """
    import cv2

    side = crop.side
    up = render.astype(np.float32) / (255.0 if render.dtype == np.uint8 else 1.0)
    if up.shape[0] != side:
        up = np.clip(cv2.resize(up, (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)
    out = original.copy()
    height, width = original.shape[:2]
    x0, y0 = max(crop.x0, 0), max(crop.y0, 0)
    x1, y1 = min(crop.x0 + side, width), min(crop.y0 + side, height)
    sub = (slice(y0 - crop.y0, y1 - crop.y0), slice(x0 - crop.x0, x1 - crop.x0))
    region = original[y0:y1, x0:x1].astype(np.float32) / 255
    face, weight = up[sub], mask[sub][..., None]
    if colour_match:
        face = match_colour(face, region, mask[sub])
    out[y0:y1, x0:x1] = np.round((weight * face + (1 - weight) * region) * 255).clip(0, 255).astype(np.uint8)
    return out


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1))


class Restorer(nn.Module):
    """Light U-Net: ``[pasted RGB, render RGB, mask, repair region]`` (8 channels) → RGB residual, applied only
    inside the repair region. Input sides must be multiples of 4.

    Zero-initialised output layer: an untrained restorer returns plain paste-back exactly.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.enc1, self.enc2, self.mid = _block(8, width), _block(width, 2 * width), _block(2 * width, 4 * width)
        self.dec2, self.dec1 = _block(6 * width, 2 * width), _block(3 * width, width)
        self.out = nn.Conv2d(width, 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pasted: Tensor, render: Tensor, mask: Tensor, region: Tensor) -> Tensor:
        """pasted, render: [B, 3, H, W] in [0, 1]; mask, region: [B, 1, H, W] → restored [B, 3, H, W]."""
        e1 = self.enc1(torch.cat([pasted, render, mask, region], 1))
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        m = self.mid(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False), e1], 1))
        return (pasted + region * self.out(d1)).clamp(0, 1)

    @torch.no_grad()
    def restore(self, pasted: np.ndarray, render: np.ndarray, mask: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Numpy convenience on one crop: uint8 [S, S, 3] pasted and render, float [S, S] mask and region → uint8.
        The crop is padded to a multiple of 4 and cropped back."""
        device = next(self.parameters()).device
        side = pasted.shape[0]
        pad = (-side) % 4

        def tensor(a: np.ndarray, scale: float) -> Tensor:
            t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device) / scale
            t = t.permute(2, 0, 1)[None] if t.dim() == 3 else t[None, None]
            return F.pad(t, (0, pad, 0, pad), mode="replicate") if pad else t

        out = self(tensor(pasted, 255), tensor(render, 255), tensor(mask, 1), tensor(region, 1))
        out = out[0, :, :side, :side].permute(1, 2, 0).cpu().numpy()
        return np.round(out * 255).clip(0, 255).astype(np.uint8)
