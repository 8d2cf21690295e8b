"""Image and landmark metrics for ``synctalk evaluate``. Every metric returns a Python float (or a dict of floats).

Images are numpy ``uint8`` [H, W, 3] (divided by 255) or float arrays / tensors in [0, 1] of shape [H, W, C] or
[H, W]; :func:`as_image` is the one conversion. All image maths runs in float64.

- :func:`psnr`: peak signal-to-noise ratio (peak 1), ``inf`` for identical images.
- :func:`ssim`: SSIM with an 11 × 11 Gaussian window (sigma 1.5), mean over pixels and channels.
- :func:`ms_ssim`: multi-scale SSIM (Wang, Simoncelli & Bovik 2003), fewer scales for small images.
- :data:`MOUTH_LANDMARKS`, :func:`lmd`: mouth landmark distance (mean-centred, as SyncTalk / AD-NeRF report it).
- :func:`landmarks_of_frames`: MediaPipe Face Landmarker over frames → landmarks, found flags, blendshapes.
- :func:`blendshape_error`: blendshape MAE for the upper and lower face, our stand-in for AUE (action-unit error).
- :func:`lpips_metric`: LPIPS v0.1 AlexNet (:mod:`synctalk.models.lpips`) when ``lpips_alex.pt`` is in the model
  cache, else :class:`Skipped` with what to do; :func:`face_box`: the square face box it is also computed in.
- :func:`fid_metric`: not computed by this version; :class:`Skipped` with that reason so reports say so.
- :func:`mean_image_baseline`: PSNR of the mean training frame, the floor a model has to beat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MOUTH_LANDMARKS", "MS_SSIM_WEIGHTS", "Skipped", "as_image", "blendshape_error", "face_box",
           "fid_metric", "landmarks_of_frames", "lmd", "lpips_metric", "mean_image_baseline", "ms_ssim", "psnr", "ssim"]

ImageLike = np.ndarray | Tensor

# SSIM constants for images in [0, 1]: C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1.
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2
# Wang et al. 2003, finest scale first (they sum to 1.0001, as published).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ------------------------------------------------------------------------------------------ images
def as_image(image: ImageLike) -> Tensor:
    """Convert an image to a float64 tensor [1, C, H, W] in [0, 1].

    Args:
        image: numpy or torch, [H, W, C] (C = 1 or 3) or [H, W]; ``uint8`` is divided by 255, floats must already
            be in [0, 1].

    Example: ``np.full((2, 2, 3), 255, np.uint8)`` → a [1, 3, 2, 2] tensor of ones.
    """
    tensor = torch.as_tensor(image) if isinstance(image, Tensor) else torch.from_numpy(np.array(image))
    tensor = tensor.detach().cpu()
    if tensor.dim() == 2:
        tensor = tensor[..., None]
    if tensor.dim() != 3 or tensor.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be [H, W, 3], [H, W, 1] or [H, W], got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.float64) / 255.0
    elif tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
        if tensor.numel() and (tensor.min() < -1e-6 or tensor.max() > 1 + 1e-6):
            raise ValueError(f"float images must be in [0, 1], got values in [{tensor.min():.4g}, "
                             f"{tensor.max():.4g}] (uint8-range floats? divide by 255 or pass uint8)")
    else:
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {tensor.dtype}")
    return tensor.permute(2, 0, 1)[None].contiguous()


def _pair(pred: ImageLike, gt: ImageLike) -> tuple[Tensor, Tensor]:
    x, y = as_image(pred), as_image(gt)
    if x.shape != y.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(x.shape[1:])} and {tuple(y.shape[1:])} "
                         f"([C, H, W])")
    return x, y


def _psnr(x: Tensor, y: Tensor) -> float:
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def psnr(pred: ImageLike, gt: ImageLike) -> float:
    """Peak signal-to-noise ratio in dB with peak 1: ``10 log10(1 / MSE)``, MSE over pixels and channels.

    Example: gt 0.5 everywhere, pred 0.6 everywhere → MSE 0.01 → 20 dB; identical images → ``inf``.
    """
    return _psnr(*_pair(pred, gt))


@lru_cache(maxsize=4)
def _gaussian(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian taps [size], float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _blur(image: Tensor) -> Tensor:
    """Separable Gaussian filter, 'valid' borders: [1, C, H, W] → [1, C, H - 10, W - 10]."""
    g = _gaussian()
    channels = image.shape[1]
    image = F.conv2d(image, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(image, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _ssim_terms(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel luminance and contrast-structure maps, each [1, C, H - 10, W - 10].

    ``l = (2 mx my + C1) / (mx² + my² + C1)``, ``cs = (2 sxy + C2) / (sx² + sy² + C2)``, with Gaussian-weighted
    local means m, variances s² and covariance sxy; SSIM = l · cs.
    """
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} × {SSIM_WINDOW} pixels (the Gaussian "
                         f"window), got {tuple(x.shape[-2:])}")
    mx, my = _blur(x), _blur(y)
    sxx = _blur(x * x) - mx * mx
    syy = _blur(y * y) - my * my
    sxy = _blur(x * y) - mx * my
    luminance = (2 * mx * my + SSIM_C1) / (mx * mx + my * my + SSIM_C1)
    contrast_structure = (2 * sxy + SSIM_C2) / (sxx + syy + SSIM_C2)
    return luminance, contrast_structure


def ssim(pred: ImageLike, gt: ImageLike) -> float:
    """Structural similarity, 11 × 11 Gaussian window (sigma 1.5), C1 = 0.01², C2 = 0.03² for [0, 1] images.

    Windows lie fully inside the image ('valid', as in Wang et al.'s reference code and scikit-image), and the
    SSIM map is averaged over pixels and channels. Needs H, W >= 11.

    Example: two constant images a = 0.6 and b = 0.5 have no contrast, so cs = 1 and SSIM =
    ``(2ab + C1) / (a² + b² + C1)`` = 0.6001 / 0.6101 = 0.98361; identical images → 1.
    """
    luminance, contrast_structure = _ssim_terms(*_pair(pred, gt))
    return float((luminance * contrast_structure).mean())


def _n_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales whose image (halved each time, rounded down) still holds the 11-px window."""
    side, scales = min(height, width), 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 >= SSIM_WINDOW:
        side //= 2
        scales += 1
    return scales


def ms_ssim(pred: ImageLike, gt: ImageLike) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003): ``prod_j cs_j^w_j`` over the finer scales times
    ``ssim_M^w_M`` at the coarsest, per channel, then the mean over channels.

    Scale j + 1 is scale j average-pooled 2 × 2 (an odd last row / column is dropped). ``cs_j`` is the mean
    contrast-structure term of scale j, ``ssim_M`` the mean SSIM (luminance × contrast-structure) of the coarsest
    scale, the usual reading of the paper's ``l_M^a_M · cs_M^b_M`` with a_M = b_M. Negative means (anti-correlated
    images) are clamped to 0 before the fractional powers. Weights: :data:`MS_SSIM_WEIGHTS`.

    Small images: 5 scales need a smallest side of at least 176 px (11 · 2⁴). Smaller images use the M < 5 finest
    scales that fit (88-175 px: 4, 44-87: 3, 22-43: 2, 11-21: 1) with the first M weights divided by their sum,
    so a 64 × 64 image uses 3 scales and an image under 22 px gives plain :func:`ssim`. Values from images of
    different sizes are therefore not strictly comparable.

    Example: constant images a = 0.6, b = 0.5 (cs = 1 at every scale, SSIM 0.98361 at each): 256 × 256 →
    0.98361^0.1333 = 0.99780; 64 × 64 (3 scales) → 0.98361^(0.3001 / 0.6305) = 0.99218. Identical images → 1.
    """
    x, y = _pair(pred, gt)
    scales = _n_scales(*x.shape[-2:])
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    if scales < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()
    terms = []  # per scale: [C]
    for j in range(scales):
        if j > 0:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        luminance, contrast_structure = _ssim_terms(x, y)
        term = contrast_structure if j < scales - 1 else luminance * contrast_structure
        terms.append(term.mean(dim=(0, 2, 3)))
    stacked = torch.stack(terms).clamp_min(0.0)  # [M, C]
    per_channel = torch.prod(stacked ** weights[:, None], dim=0)
    return float(per_channel.mean())


def mean_image_baseline(train_frames: Iterable[ImageLike], val_frames: Iterable[ImageLike]) -> float:
    """PSNR of the per-pixel mean training frame against each validation frame, averaged over validation frames.

    A renderer that has learned nothing about audio or expression but the average look of the clip scores this;
    a trained model should be well above it. Frames stream (one in memory at a time besides the mean).

    Example: train frames 0.2 and 0.4 (constant) → mean 0.3; val frames 0.4 and 0.1 → PSNR 20 and 13.979 →
    16.990 dB.
    """
    total, count = None, 0
    for frame in train_frames:
        image = as_image(frame)
        if total is not None and image.shape != total.shape:
            raise ValueError(f"training frames differ in shape: {tuple(total.shape[1:])} and "
                             f"{tuple(image.shape[1:])}")
        total = image if total is None else total + image
        count += 1
    if total is None:
        raise ValueError("mean_image_baseline needs at least one training frame")
    mean = total / count
    scores = []
    for frame in val_frames:
        image = as_image(frame)
        if image.shape != mean.shape:
            raise ValueError(f"validation frame {tuple(image.shape[1:])} differs from training frames "
                             f"{tuple(mean.shape[1:])} ([C, H, W])")
        scores.append(_psnr(mean, image))
    if not scores:
        raise ValueError("mean_image_baseline needs at least one validation frame")
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------------ landmarks
@lru_cache(maxsize=1)
def _mouth_landmarks() -> tuple[int, ...]:
    from synctalk.runtime import import_mediapipe

    import_mediapipe()  # the package import, without its protobuf warning
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    return tuple(sorted({index for edge in FACEMESH_LIPS for index in edge}))


def __getattr__(name: str):
    # MOUTH_LANDMARKS is derived from mediapipe's FACEMESH_LIPS on first access (importing mediapipe takes ~1 s).
    if name == "MOUTH_LANDMARKS":
        return _mouth_landmarks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MOUTH_LANDMARKS: tuple[int, ...]
"""The 40 lip-contour indices of MediaPipe's 478-point face mesh (outer and inner contours of both lips, sorted):
every index of ``mediapipe.python.solutions.face_mesh_connections.FACEMESH_LIPS``; computed on first access."""


def lmd(pred_landmarks: ImageLike, gt_landmarks: ImageLike, indices: Sequence[int] | None = None,
        centred: bool = True, valid: np.ndarray | None = None) -> float:
    """Landmark distance: mean Euclidean distance (pixels) between corresponding 2-D landmarks.

    Args:
        pred_landmarks, gt_landmarks: [N, P, 2] or [N, P, 3] (only x, y are used), or one frame [P, 2|3].
        indices: the landmarks to compare; None → :data:`MOUTH_LANDMARKS` (the mouth LMD of SyncTalk / AD-NeRF).
        centred: subtract each frame's own mean of the selected points from each set first, as SyncTalk /
            AD-NeRF report it, so a head translation does not count; False compares raw positions.
        valid: [N] bool, frames to use (e.g. ``found_pred & found_gt`` from :func:`landmarks_of_frames`).
            Selected points must be finite in the frames used.

    Examples: identical sets → 0; a set translated by (3, 4) → 0 centred, 5 uncentred; points on a circle of
    radius 10 scaled by 1.5 about any centre → 5 (each point moves 0.5 · 10 relative to the mean); 20 of 40
    points shifted by d → ``2 d k (P - k) / P²`` = d / 2 centred (the mean moves d / 2).
    """
    pred = np.asarray(pred_landmarks, np.float64)
    gt = np.asarray(gt_landmarks, np.float64)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks must both be [N, P, 2|3], got {pred.shape} and {gt.shape}")
    selected = list(_mouth_landmarks() if indices is None else indices)
    if not selected:
        raise ValueError("indices selects no landmarks")
    pred, gt = pred[:, selected, :2], gt[:, selected, :2]
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != pred.shape[:1]:
            raise ValueError(f"valid must be [N] = [{pred.shape[0]}], got {valid.shape}")
        pred, gt = pred[valid], gt[valid]
    if pred.shape[0] == 0:
        raise ValueError("lmd: no frames to compare (all frames excluded by `valid`?)")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("lmd: landmarks are NaN/inf in some frames (no face found?); pass valid=found_pred & "
                         "found_gt")
    if centred:
        pred = pred - pred.mean(axis=1, keepdims=True)
        gt = gt - gt.mean(axis=1, keepdims=True)
    return float(np.linalg.norm(pred - gt, axis=-1).mean())


def landmarks_of_frames(frames: Iterable[np.ndarray], fps: float, model_path=None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run MediaPipe Face Landmarker (video mode, ``synctalk.face.landmarks.FaceLandmarker``) over frames in order.

    Args:
        frames: RGB ``uint8`` [H, W, 3], in temporal order (the tracker uses frame timestamps ``i / fps``).
        fps: frame rate of the frames.
        model_path: ``face_landmarker.task``; None → ``synctalk.assets.fetch("face_landmarker")``.

    Returns:
        landmarks [N, 478, 2] float32 pixel x, y; found [N] bool; blendshapes [N, 52] float32 in
        ``synctalk.data.contract.BLENDSHAPE_NAMES`` order. Frames without a face are NaN in both arrays (pass
        ``valid=found`` to :func:`lmd`). Call once per video: rendered and ground-truth clips are tracked apart.
    """
    from synctalk.data.contract import N_BLENDSHAPES, N_LANDMARKS
    from synctalk.face.landmarks import FaceLandmarker

    landmarks, found, blendshapes = [], [], []
    with FaceLandmarker(fps, model_path) as landmarker:
        for frame in frames:
            result = landmarker(np.asarray(frame))
            found.append(result is not None)
            if result is None:
                landmarks.append(np.full((N_LANDMARKS, 2), np.nan, np.float32))
                blendshapes.append(np.full(N_BLENDSHAPES, np.nan, np.float32))
            else:
                landmarks.append(result[0][:, :2].astype(np.float32))
                blendshapes.append(result[1].astype(np.float32))
    if not found:
        return (np.zeros((0, N_LANDMARKS, 2), np.float32), np.zeros(0, bool),
                np.zeros((0, N_BLENDSHAPES), np.float32))
    return np.stack(landmarks), np.array(found, bool), np.stack(blendshapes)


# ------------------------------------------------------------------------------------------ blendshapes
UPPER_FACE_PREFIXES = ("brow", "eye")
LOWER_FACE_PREFIXES = ("jaw", "mouth", "cheek")


def blendshape_error(pred: np.ndarray, gt: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean absolute error of blendshape scores, per face region: our stand-in for AUE (action-unit error).

    AUE in the talking-head papers compares facial action units from OpenFace; we compare MediaPipe's ARKit
    blendshapes instead and call it blendshape error, not AUE.

    Args:
        pred, gt: [N, B] or [B] scores in [0, 1], columns named by ``names``.
        names: B column names; None → ``synctalk.data.contract.BLENDSHAPE_NAMES`` (B = 52).

    Returns:
        ``{"upper_face": MAE over brow* and eye* columns, "lower_face": MAE over jaw*, mouth* and cheek*
        columns}``, each averaged over frames and columns (NaN when no column of the group is present).
        ``_neutral`` and ``noseSneer*`` are in neither group.

    Example: names (browDownLeft, eyeBlinkLeft, jawOpen, mouthClose), pred [0.5, 0.2, 0.8, 0.0], gt
    [0.3, 0.2, 0.2, 0.1] → upper (0.2 + 0) / 2 = 0.1, lower (0.6 + 0.1) / 2 = 0.35.
    """
    if names is None:
        from synctalk.data.contract import BLENDSHAPE_NAMES

        names = BLENDSHAPE_NAMES
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.ndim == 1:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != len(names):
        raise ValueError(f"pred and gt must both be [N, {len(names)}] (one column per name), got {pred.shape} "
                         f"and {gt.shape}")
    error = np.abs(pred - gt)
    out = {}
    for group, prefixes in (("upper_face", UPPER_FACE_PREFIXES), ("lower_face", LOWER_FACE_PREFIXES)):
        columns = [i for i, name in enumerate(names) if name.startswith(prefixes)]
        out[group] = float(error[:, columns].mean()) if columns else math.nan
    return out


# ------------------------------------------------------------------------------------------ learned metrics
@dataclass(frozen=True)
class Skipped:
    """A metric that cannot run here, with the reason (what file to put where) for the report."""

    reason: str


def _not_implemented(metric: str, network: str) -> Skipped:
    return Skipped(f"{metric} skipped: this version of synctalk does not compute {metric} (it has no {network} "
                   "implementation yet); no value is reported")


def lpips_metric(net: str = "alex", device: str | torch.device = "cpu"):
    """LPIPS v0.1 (:mod:`synctalk.models.lpips`) as ``score(pred, gt) -> float`` for two images as :func:`psnr`
    takes them (RGB, at least 31 px a side for AlexNet), or :class:`Skipped` with the reason when the converted
    weights are not in the model cache (or are damaged).

    Example: ``score(image, image)`` → 0.0; LPIPS grows with blur and noise.
    """
    from synctalk import assets
    from synctalk.errors import AssetError
    from synctalk.models.lpips import load_lpips

    try:
        if not assets.is_available(f"lpips_{net}"):   # a metric never starts a download
            raise AssetError(f"model file 'lpips_{net}.pt' is not in the model cache ({assets.cache_dir()}).")
        model = load_lpips(net, device)
    except AssetError as exc:
        first = str(exc).splitlines()[0]
        return Skipped(f"LPIPS skipped: {first} Run `synctalk assets fetch lpips_{net}` (pip and internet once) "
                       "or see `synctalk assets list`; no value is reported")

    def score(pred: ImageLike, gt: ImageLike) -> float:
        x, y = _pair(pred, gt)
        if x.shape[1] != 3:
            raise ValueError(f"LPIPS compares RGB images, got {x.shape[1]} channel(s)")
        param = next(model.parameters())
        with torch.no_grad():
            return float(model(x.to(param.device, torch.float32), y.to(param.device, torch.float32))[0])

    score.min_side = model.min_side
    return score


def face_box(landmarks: np.ndarray, shape: tuple[int, int], margin: float = 0.1) -> tuple[slice, slice]:
    """The square box around a face's landmarks ([P, 2|3] pixels x, y), grown by ``margin`` of its side on every
    side and moved (then cut) to lie inside an image of ``shape`` (H, W): ``image[box]`` is the face.

    Example: landmarks spanning x 10..30, y 20..30 in a 64 x 64 image → side 20 · 1.2 = 24 centred on (20, 25) →
    rows 13..37, columns 8..32.
    """
    xy = np.asarray(landmarks, np.float64)[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    side = float((hi - lo).max()) * (1 + 2 * margin)
    height, width = shape
    side = int(round(min(side, height, width)))
    cx, cy = (lo + hi) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def fid_metric() -> Skipped:
    """FID is not computed yet (no Inception v3 implementation here): always :class:`Skipped` with that reason."""
    return _not_implemented("FID", "Inception v3 network")
