"""Step `torso`: per-frame torso plates: the frame with the head removed (background plate in its place) and
the part of the neck hidden behind the chin filled in.

Why the fill: the head model is composited over this plate. When the mouth opens or the head moves, the chin
uncovers neck that the frame never showed; without a fill, the plate shows background there (the dark gap /
"double chin" of NeRF talking heads). The neck is extended upwards under the jaw: each column takes the colour
of the neck just below the jaw in that column, darkened a little towards the top like the shadow under a chin,
inside the neck's width, with soft edges.
"""

from __future__ import annotations

import numpy as np

from synctalk.data.contract import HEAD_LABELS, PARSING_LABELS

CHIN = 152
SHADOW = 0.18  # darkening at the top of the filled neck (the skin right under the jaw is in shadow)


def neck_columns(labels: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """Centre x and half width (px) of the neck: from the neck label's top rows, or from the jaw when the neck
    label is thin (collar, beard)."""
    neck = labels == PARSING_LABELS["neck"]
    face_w = float(landmarks[454, 0] - landmarks[234, 0])
    rows = np.flatnonzero(neck.any(axis=1))
    if rows.size >= 3:
        xs = np.flatnonzero(neck[rows[0]:rows[0] + max(3, rows.size // 4)].any(axis=0))
        if xs.size >= 0.25 * face_w:
            return float((xs[0] + xs[-1]) / 2), float((xs[-1] - xs[0]) / 2)
    return float(landmarks[CHIN, 0]), 0.3 * face_w


def torso_plate(rgb: np.ndarray, labels: np.ndarray, landmarks: np.ndarray | None, plate: np.ndarray) -> np.ndarray:
    """Torso plate `[H, W, 3] uint8` of one frame (see the module docstring); `landmarks` `[478, 3]` pixels or
    None (no face: the head labels are just replaced by the plate)."""
    import cv2

    head = np.isin(labels, HEAD_LABELS)
    out = rgb.copy()
    out[head] = plate[head]
    if landmarks is None:
        return out
    height, width = labels.shape
    centre, half = neck_columns(labels, landmarks)
    from preprocess.parsing import jaw_line

    chin_y = float(landmarks[CHIN, 1])
    face_h = chin_y - float(landmarks[10, 1])
    # The fill covers what a dropping chin or a turning head can uncover: from 15% of a face height above the
    # jaw line down to the visible neck, fading in over its upper part (it is under the face in any composite).
    reach = 0.15 * face_h
    jaw = jaw_line(landmarks, width)
    top = int(max(jaw[int(np.clip(centre, 0, width - 1))] - reach, 0))
    neck = labels == PARSING_LABELS["neck"]
    x0, x1 = max(int(centre - half), 0), min(int(centre + half) + 1, width)
    if x1 <= x0 or top >= height:
        return out
    # Colour of each column: the neck's first rows below the jaw, or the neck's mean colour.
    columns = neck[:, x0:x1]                                                        # [H, w]
    has_neck = columns.any(axis=0)
    first_neck = np.where(has_neck, columns.argmax(axis=0), int(chin_y))           # first neck row per column
    neck_pixels = rgb[neck]
    fallback = neck_pixels.mean(axis=0) if len(neck_pixels) else rgb[min(int(chin_y) + 5, height - 1),
                                                                     int(centre)].astype(np.float32)
    # Mean colour of the first 8 neck rows of each column (the skin right under the jaw).
    rows = np.clip(first_neck[None, :] + np.arange(8)[:, None], 0, height - 1)     # [8, w]
    band = rgb[rows, np.arange(x0, x1)[None, :]].astype(np.float32)                # [8, w, 3]
    inside = columns[rows, np.arange(x1 - x0)[None, :]][..., None]                 # [8, w, 1]
    counts = inside.sum(axis=0)
    column_colour = np.where(counts >= 3, (band * inside).sum(axis=0) / np.maximum(counts, 1), fallback)
    column_colour = cv2.GaussianBlur(column_colour[None].astype(np.float32), (0, 0), sigmaX=max(1.0, half / 8))[0]
    ys = np.arange(top, height)[:, None]
    start = jaw[x0:x1][None, :] - reach                                             # per-column top
    region = (ys >= start) & (ys < first_neck[None, :]) & head[top:, x0:x1]       # hidden neck: under the head
    span = np.maximum(first_neck[None, :] - start, 1)
    depth = np.clip((first_neck[None, :] - ys) / span, 0, 1)                      # 0 at the neck, 1 at the top
    fill = column_colour[None, :, :] * (1 - SHADOW * depth)[..., None]             # darker towards the top
    # Soft sides (outer fifth of the neck's width) and a soft top (upper 40% of the fill).
    across = np.clip((half - np.abs(np.arange(x0, x1) - centre)) / max(half * 0.2, 1.0), 0, 1)[None, :, None]
    alpha = region[..., None] * across * np.clip((1 - depth) / 0.4, 0, 1)[..., None]
    patch = out[top:, x0:x1].astype(np.float32)
    out[top:, x0:x1] = np.clip(alpha * fill + (1 - alpha) * patch + 0.5, 0, 255).astype(np.uint8)
    return out
