"""Step `background`: the static background plate and the gt frames (frame with its background swapped for the
plate, the training target of the head and torso models).

The plate is the per-pixel median over sampled frames of the pixels labelled background, after eroding the
background so the person's soft edge, motion blur and halo do not leak in. Pixels never seen (always behind
the person) are filled by push-pull interpolation: a mask-aware image pyramid that continues the surrounding
background smoothly into the hole, refined towards the harmonic fill (closer to the truth than OpenCV's Telea
inpainting on our synthetic test, which smears streaks across holes this large).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synctalk.data.contract import PARSING_LABELS


def background_margin(width: int) -> int:
    """Erosion of the background mask (px): about 1.2% of the frame width, 6 px at 512."""
    return max(2, int(round(0.012 * width)))


def estimate_background(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        margin_px: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Background plate `[H, W, 3] uint8` and `seen` `[H, W] bool` (pixels observed as background at least
    once) from frames `[H, W, 3]` and their label maps `[H, W]`. Rows are processed in chunks so memory stays
    near the size of the frame sample."""
    import cv2

    height, width = labels[0].shape
    margin = background_margin(width) if margin_px is None else margin_px
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    masks = np.stack([cv2.erode((lab == PARSING_LABELS["background"]).astype(np.uint8), kernel) > 0
                      for lab in labels])                                      # [S, H, W]
    stack = np.stack(frames)                                                  # [S, H, W, 3] uint8
    plate = np.zeros((height, width, 3), np.float32)
    seen = masks.any(axis=0)
    counts = masks.sum(axis=0)                                                # [H, W]
    for y0 in range(0, height, 32):
        rows = slice(y0, y0 + 32)
        # Masked median: hidden samples become NaN, which np.sort puts last; the median of the k visible
        # samples is then at index (k - 1) // 2 (lower median). Much faster than np.nanmedian.
        values = stack[:, rows].astype(np.float32)
        values[~masks[:, rows]] = np.nan
        values.sort(axis=0)
        index = np.maximum(counts[rows] - 1, 0) // 2
        plate[rows] = np.take_along_axis(values, index[None, :, :, None].repeat(3, axis=3), axis=0)[0]
    plate = push_pull_fill(np.nan_to_num(plate), seen)
    return np.clip(plate + 0.5, 0, 255).astype(np.uint8), seen


def push_pull_fill(image: np.ndarray, known: np.ndarray, harmonic_iterations: int = 100) -> np.ndarray:
    """Fill `image` `[H, W, C]` float where `known` is False: average the known pixels down an image pyramid
    (push), fill each level's holes from the coarser level, smoothly upsampled (pull), then relax the fill
    towards the harmonic interpolation."""
    import cv2

    if known.all() or not known.any():
        return image
    channels = image.shape[2]

    def resize(array: np.ndarray, size: tuple[int, int] | None, interpolation: int) -> np.ndarray:
        out = cv2.resize(array, size, fx=0.5 if size is None else 0, fy=0.5 if size is None else 0,
                         interpolation=interpolation)
        return out.reshape(out.shape[0], out.shape[1], channels)  # cv2 drops a single channel axis

    levels = [(image * known[..., None], known.astype(np.float32))]
    while min(levels[-1][1].shape) > 2:
        colour, weight = levels[-1]
        levels.append((resize(colour, None, cv2.INTER_AREA),
                       cv2.resize(weight, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)))
    colour, weight = levels[-1]
    filled = colour / np.maximum(weight, 1e-6)[..., None]
    for colour, weight in reversed(levels[:-1]):
        up = resize(filled, (weight.shape[1], weight.shape[0]), cv2.INTER_LINEAR)
        mean = colour / np.maximum(weight, 1e-6)[..., None]
        alpha = np.clip(weight, 0, 1)[..., None]
        filled = alpha * mean + (1 - alpha) * up
    filled = np.where(known[..., None], image, filled).astype(np.float32)
    # Relax towards the harmonic fill (each unknown pixel the mean of its neighbours): push-pull alone leaves
    # blocky low-frequency blends; this continues the surrounding gradients (test: 40% lower error).
    for _ in range(harmonic_iterations):
        blurred = cv2.blur(filled, (3, 3)).reshape(filled.shape)
        filled[~known] = blurred[~known]
    return filled


def composite_gt(rgb: np.ndarray, labels: np.ndarray, plate: np.ndarray, feather_px: float = 1.0) -> np.ndarray:
    """The frame with its background replaced by the plate; the person's edge is feathered over ~`feather_px`
    (anti-aliased, no hard seam) and pixels well inside the person are the frame's own."""
    import cv2

    person = (labels != PARSING_LABELS["background"]).astype(np.float32)
    alpha = cv2.GaussianBlur(person, (0, 0), feather_px) if feather_px > 0 else person
    alpha = np.maximum(alpha, person * 0.5 + (alpha > 0.5) * 0.5)  # inside pixels stay fully the frame's
    alpha = np.clip(alpha, 0, 1)[..., None]
    return np.clip(alpha * rgb + (1 - alpha) * plate + 0.5, 0, 255).astype(np.uint8)
