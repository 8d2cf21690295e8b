"""Step `torso`: per-frame torso plates, the backdrop the head model is composited over.

A torso plate is the frame with the head removed (background plate in its place) and the background swapped for
the plate (as in the gt frames), plus one addition: the part of the neck hidden behind the chin is painted in.
Why: the head model renders the head of *another* moment over this plate. When its chin sits higher than the
chin of the frame the plate came from (mouth closing, head tilting up), it uncovers whatever the plate holds just
under this frame's jaw; with the head merely erased that is background, and the result is the dark gap / see-
through neck of NeRF talking heads. So the neck is continued upwards behind the jaw, most of the way to mouth
height, within the neck's width: each column takes the colour of its top-most visible neck rows, darkened towards
the top like the shadow under a chin, with soft sides and a soft top; and a thin shaded rim follows the rest of
the jaw line, where label maps and tracking jitter by a few pixels from frame to frame (see `neck_fill`).

Arrays: RGB `[H, W, 3] uint8`; label maps `[H, W] uint8` (`PARSING_LABELS`); landmarks `[478, 3] float32` pixels
(MediaPipe face mesh; only x, y are used).
"""

from __future__ import annotations

import numpy as np

from preprocess.background import blend, person_alpha
from synctalk.data.contract import HEAD_LABELS, PARSING_LABELS

BACKGROUND = PARSING_LABELS["background"]
NECK = PARSING_LABELS["neck"]

# MediaPipe face-mesh indices.
FOREHEAD, CHIN = 10, 152
MOUTH_CORNERS = (61, 291)
JAW_ANGLES = (172, 397)  # the corners of the jaw (left and right in the image for a frontal face)
# The lower jaw contour between the jaw angles, image-left to image-right for a frontal face.
LOWER_JAW = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397)
LOWER_LIP_BOTTOM = 17

REACH = 0.18          # height of the painted neck above the chin, in face heights (forehead to chin)
SHADOW = 0.2          # darkening at the top of the painted neck (the skin under a jaw is in its shadow)
SIDE_SOFTNESS = 0.2   # fraction of the neck's half width over which the painted neck fades out sideways
TOP_SOFTNESS = 0.3    # fraction of the painted height over which it fades in from the top
JAW_RIM = 0.025       # height of the painted rim above the jaw line, in face heights


def torso_plate(rgb: np.ndarray, labels: np.ndarray, landmarks: np.ndarray | None, plate: np.ndarray,
                feather_px: float = 1.0) -> np.ndarray:
    """Torso plate of one frame: `[H, W, 3] uint8`.

    rgb: the frame `[H, W, 3] uint8`; labels: its label map `[H, W] uint8`; landmarks: `[478, 3]` pixels, or
    None when the frame has no face; plate: the background plate `[H, W, 3] uint8`.

    Neck and torso pixels are the frame's own, exactly. Head pixels become the plate, except under the jaw where
    the neck is continued upwards (`neck_fill`); with `landmarks=None` there is no fill. Background pixels
    become the plate, with the frame's own pixels kept in a `feather_px` (Gaussian sigma) rim around the body
    so its outline stays anti-aliased, matching `composite_gt` there.
    """
    import cv2

    labels8 = np.ascontiguousarray(labels, np.uint8)
    body = cv2.LUT(labels8, _BODY_LUT)                        # 255 on neck and torso
    fill = neck_fill(rgb, labels, landmarks) if landmarks is not None else None
    # rim of the frame kept around the body: only over background pixels (head pixels must go)
    rim = cv2.bitwise_and(person_alpha(body, feather_px), cv2.LUT(labels8, _BACKGROUND_LUT))
    out = plate
    if fill is not None:
        colour, alpha, (y0, x0) = fill
        h, w = alpha.shape
        out = plate.copy()
        out[y0:y0 + h, x0:x0 + w] = blend(colour, plate[y0:y0 + h, x0:x0 + w], alpha)
        # where the painted neck covers background (a gap under the chin), do not bring the frame back
        patch = rim[y0:y0 + h, x0:x0 + w]
        patch[:] = np.rint(patch * (1.0 - alpha)).astype(np.uint8)
    return blend(rgb, out, cv2.max(rim, body))


def _label_lut(values) -> np.ndarray:
    """256-entry lookup table: 255 for the given label values, 0 otherwise (cv2.LUT is a fast np.isin)."""
    lut = np.zeros(256, np.uint8)
    lut[list(values)] = 255
    return lut


_BODY_LUT = _label_lut(v for v in range(256) if v != BACKGROUND and v not in HEAD_LABELS)  # neck, torso
_BACKGROUND_LUT = _label_lut([BACKGROUND])
_HEAD_LUT = _label_lut(HEAD_LABELS)


def jaw_y(landmarks: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """y (px) of the lower jaw contour at columns `xs` `[K]` float → `[K]` float32; beyond the jaw angles the
    contour's end heights are held."""
    jaw = landmarks[list(LOWER_JAW), :2].astype(np.float64)
    order = np.argsort(jaw[:, 0], kind="stable")
    return np.interp(xs, jaw[order, 0], jaw[order, 1]).astype(np.float32)


def neck_span(labels: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """Left and right x (px) of the neck just under the jaw.

    From the neck label: the median extent of its top rows (a face-height fifth below the first neck row near the
    chin), clamped to the jaw's width. When the neck label is missing or thin there (a high collar, a beard, a
    parser that gave up), a typical neck under the jaw: centred between the jaw angles, 0.8 of their distance wide.
    """
    lm = landmarks[:, :2]
    face_h = float(np.linalg.norm(lm[CHIN] - lm[FOREHEAD]))
    left_angle, right_angle = sorted((float(lm[JAW_ANGLES[0], 0]), float(lm[JAW_ANGLES[1], 0])))
    jaw_w = max(right_angle - left_angle, 1.0)
    centre = 0.5 * (left_angle + right_angle)
    prior = (centre - 0.4 * jaw_w, centre + 0.4 * jaw_w)
    height, width = labels.shape
    # neck pixels under the jaw's columns and in the face-height below the chin
    x0, x1 = int(max(left_angle - 0.1 * jaw_w, 0)), int(min(right_angle + 0.1 * jaw_w, width))
    y0 = int(max(min(lm[list(LOWER_JAW), 1].min(), lm[CHIN, 1]) - 0.1 * face_h, 0))
    y1 = int(min(lm[CHIN, 1] + 0.6 * face_h, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return prior
    neck = labels[y0:y1, x0:x1] == NECK
    rows = np.flatnonzero(neck.sum(axis=1) >= 2)
    if rows.size < 2:
        return prior
    rows = rows[rows < rows[0] + max(2, int(0.2 * face_h))]
    band = neck[rows]
    cols = np.arange(x0, x1)
    left = np.median(np.where(band, cols, np.inf).min(axis=1))
    right = np.median(np.where(band, cols, -np.inf).max(axis=1)) + 1
    left, right = max(float(left), left_angle - 0.05 * jaw_w), min(float(right), right_angle + 0.05 * jaw_w)
    if right - left < 0.35 * jaw_w:
        return prior
    return left, right


def neck_fill(rgb: np.ndarray, labels: np.ndarray,
              landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """The painted hidden neck: (colour `[h, w, 3] float32`, alpha `[h, w] float32` in [0, 1], (y0, x0) of the
    patch in the frame), or None when the landmarks are unusable.

    Two parts, both in the neck's colour. The column: within the neck's columns (`neck_span`), from `REACH`
    face heights above the chin (never above the mouth corners) down to each column's first visible neck row (a
    little below the jaw where a column shows no neck, closing a gap between chin and collar), darkened towards
    the top, soft at its sides and top. The rim: a `JAW_RIM` face-height band above the jaw line across the
    whole jaw, on head pixels only, in the darker shade of the skin under a jaw; the jaw's sides move little when
    the mouth opens, but label maps and tracking jitter by a few pixels there, and without the rim another
    frame's head leaves a thin background arc along its jaw.

    Colour: per column, the mean of the top neck rows in it (columns without neck take the mean of those that
    have it, columns beyond the neck the nearest neck column's; no neck at all: the skin of the chin, darkened),
    smoothed across columns so that no vertical streaks appear.
    """
    import cv2

    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2 or lm.shape[0] <= max(LOWER_JAW + MOUTH_CORNERS) or not np.isfinite(lm[:, :2]).all():
        return None
    lm = lm[:, :2]
    height, width = labels.shape
    face_h = float(np.linalg.norm(lm[CHIN] - lm[FOREHEAD]))
    if face_h < 8:
        return None
    left, right = neck_span(labels, lm)
    jaw_left, jaw_right = float(lm[list(LOWER_JAW), 0].min()), float(lm[list(LOWER_JAW), 0].max())
    x0 = int(np.floor(max(min(left, jaw_left), 0)))
    x1 = int(np.ceil(min(max(right, jaw_right), width)))
    if x1 - x0 < 2:
        return None
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5)  # float32 throughout: the patch arrays are big
    in_neck = (xs >= left) & (xs < right)
    jaw = jaw_y(lm, xs)
    # the column's top: REACH face heights above the chin (at most up to the mouth corners), tilted with the
    # head's roll; a closing mouth lifts the chin by ~0.1 face height, so this covers it twice over
    (ax, ay), (bx, by) = lm[MOUTH_CORNERS[0]].tolist(), lm[MOUTH_CORNERS[1]].tolist()
    slope = float(np.clip((by - ay) / (bx - ax), -1.0, 1.0)) if abs(bx - ax) > 1e-3 else 0.0
    chin_x, chin_y = float(lm[CHIN, 0]), float(lm[CHIN, 1])
    reach = float(np.clip(chin_y - 0.5 * (ay + by), 0.0, REACH * face_h))
    column_top = np.where(in_neck, chin_y - reach + slope * (xs - chin_x), np.inf)
    rim_top = jaw - JAW_RIM * face_h
    top = np.minimum(column_top, rim_top)
    y0 = int(np.clip(np.floor(top.min()), 0, height - 1))
    search_end = int(min(np.ceil(jaw.max() + 0.5 * face_h), height))
    if search_end - y0 < 2:
        return None
    # first visible neck row of each column, searched from a little above the jaw (labels may overlap it)
    neck = labels[y0:search_end, x0:x1] == NECK
    rows = np.arange(y0, search_end)[:, None]
    neck &= (rows >= (jaw - 0.05 * face_h)[None, :]) & in_neck[None, :]
    has_neck = neck.any(axis=0)
    first = np.where(has_neck, (neck.argmax(axis=0) + y0).astype(np.float32), np.float32(np.inf))
    # neck columns without neck stop a little below the jaw (closing a gap between chin and collar); beside the
    # neck the rim reaches a little below the landmarks' jaw line too, on head pixels only (a parser's head/neck
    # boundary need not follow the landmarks)
    bottom = np.where(has_neck, first, np.where(in_neck, jaw + 0.08 * face_h, jaw + 0.06 * face_h))
    bottom = np.clip(bottom, top + 1, height)

    colour = _column_colours(rgb, labels, lm, neck, y0, x0, has_neck, face_h)           # [w, 3]
    # smooth across columns: the painted neck is a soft surface, and one odd column would make a streak
    sigma = max(1.0, 0.04 * (x1 - x0))
    colour = cv2.GaussianBlur(colour[None].astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=0.1,
                              borderType=cv2.BORDER_REPLICATE)[0]

    y1 = int(np.clip(np.ceil(bottom.max()), y0 + 1, height))
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    # the column: shaded by depth (0 at the visible neck, 1 at its top), soft sides and top
    column_bottom = np.where(in_neck, bottom, -np.inf)[None, :]
    span = np.maximum(column_bottom - column_top[None, :], 1.0)
    depth = np.clip((column_bottom - ys) / np.where(np.isfinite(span), span, 1.0), 0.0, 1.0)
    in_column = (ys >= column_top[None, :]) & (ys < column_bottom)
    half, centre = 0.5 * (right - left), 0.5 * (right + left)
    across = np.clip((half - np.abs(xs - centre)) / max(SIDE_SOFTNESS * half, 1.0), 0.0, 1.0)[None, :]
    column_alpha = in_column * across * np.clip((1.0 - depth) / TOP_SOFTNESS, 0.0, 1.0)
    # the rim: head pixels in a band above the jaw line, fading out at the band's top and the jaw's ends
    band = JAW_RIM * face_h
    in_rim = (ys >= rim_top[None, :]) & (ys < bottom[None, :])
    head = labels[y0:y1, x0:x1]
    head = _HEAD_LUT[head] > 0                                          # np.isin(head, HEAD_LABELS)
    jaw_half, jaw_centre = 0.5 * (jaw_right - jaw_left), 0.5 * (jaw_right + jaw_left)
    along = np.clip((jaw_half - np.abs(xs - jaw_centre)) / max(0.15 * jaw_half, 1.0), 0.0, 1.0)[None, :]
    rim_alpha = in_rim * head * along * np.clip((ys - rim_top[None, :]) / max(0.5 * band, 1.0), 0.0, 1.0)
    shade = np.where(column_alpha >= rim_alpha, 1.0 - SHADOW * np.sqrt(depth), 1.0 - SHADOW)
    patch = colour[None, :, :] * shade[..., None]
    alpha = np.maximum(column_alpha, rim_alpha).astype(np.float32)
    return patch.astype(np.float32), alpha, (y0, x0)


def _column_colours(rgb: np.ndarray, labels: np.ndarray, lm: np.ndarray, neck: np.ndarray, y0: int, x0: int,
                    has_neck: np.ndarray, face_h: float) -> np.ndarray:
    """`[w, 3] float32`: per column, the median colour of the visible neck from ~2% to ~8% of a face height
    below its top (columns without neck: interpolated from the nearest neck columns).

    The first rows are skipped (at most a third of the column's neck): the head/neck boundary of a label map is
    never exact, and its top rows hold the jaw's edge and the dark crease under it. The median, not the mean,
    because a thin neck label often catches a few pixels of collar or background.
    """
    w = neck.shape[1]
    thickness = neck.sum(axis=0)
    skip = np.minimum(int(round(0.02 * face_h)), thickness // 3)
    depth = max(3, int(round(0.06 * face_h)))
    first = neck.argmax(axis=0)                                                # row within the search window
    rows = np.minimum(first[None, :] + skip[None, :] + np.arange(depth)[:, None], neck.shape[0] - 1)
    cols = np.arange(w)[None, :]
    valid = neck[rows, cols] & has_neck[None, :]                               # [depth, w]
    good = valid.sum(axis=0) >= 2
    if not good.any():
        return np.tile(_chin_skin(rgb, labels, lm), (w, 1)).astype(np.float32)
    samples = rgb[rows + y0, cols + x0].astype(np.float32)                     # [depth, w, 3]
    samples[~valid] = np.inf                                                   # sorts after every sample
    samples = np.sort(samples[:, good], axis=0)                                # [depth, good, 3]
    middle = ((valid[:, good].sum(axis=0) - 1) // 2)[None, :, None]           # lower median's row
    medians = np.take_along_axis(samples, np.broadcast_to(middle, (1,) + samples.shape[1:]), axis=0)[0]
    # columns without enough neck: interpolated between the nearest good ones, the end values held beyond
    index = np.flatnonzero(good)
    return np.stack([np.interp(np.arange(w), index, medians[:, c]) for c in range(3)], axis=1).astype(np.float32)


def _chin_skin(rgb: np.ndarray, labels: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """`[3] float32`: skin colour of the chin (between the lower lip and the chin point), darkened as a neck in
    the shadow of the jaw would be; used when no neck is visible at all."""
    height, width = labels.shape
    a, b = lm[LOWER_LIP_BOTTOM], lm[CHIN]
    t = np.linspace(0.3, 0.8, 9)[:, None]
    points = np.rint(a + t * (b - a)).astype(int)
    points[:, 0] = np.clip(points[:, 0], 0, width - 1)
    points[:, 1] = np.clip(points[:, 1], 0, height - 1)
    samples = rgb[points[:, 1], points[:, 0]].astype(np.float32)
    return (np.median(samples, axis=0) * 0.8).astype(np.float32)
