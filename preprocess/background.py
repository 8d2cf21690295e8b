"""Step `background`: the static background plate and the training targets composited over it.

The camera is static, so every background pixel shows the same colour whenever the person does not cover it.
`estimate_background` takes a per-pixel median over the frames in which a pixel is (safely) background, and fills
the pixels that were never uncovered with a smooth harmonic (Laplace) interpolation of the surrounding plate.
Label maps are never perfect, so "safely" means: away from the person by a margin, preferring the frames where
the person is farthest, and pixels only ever seen close to the person or in few frames are checked against
their surroundings before they may shape the fill.
`composite_gt` then swaps each frame's background for the plate, so the training target's background is exactly
the one the renderer composites over.

Arrays: frames/plates are RGB `[H, W, 3] uint8`, label maps `[H, W] uint8` with `PARSING_LABELS` values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synctalk.data.contract import PARSING_LABELS

BACKGROUND = PARSING_LABELS["background"]
OUTLIER_GREY = 15.0  # disagreement (mean abs, grey levels) that cuts a doubtful pixel's confidence by e


def distance_to_person(labels: np.ndarray, cap: int) -> np.ndarray:
    """`[H, W] uint8`: each pixel's distance (px, Euclidean, rounded down) to the nearest non-background pixel,
    clipped to `cap` (<= 255); 0 on the person, `cap` everywhere when the frame has no person."""
    import cv2

    background = (labels == BACKGROUND).astype(np.uint8)
    if background.all():
        return np.full(labels.shape, cap, np.uint8)
    # distance to the nearest zero pixel; the image border is not a zero, so the border stays usable
    distance = cv2.distanceTransform(background, cv2.DIST_L2, 5)  # 5x5 chamfer: within 2% of exact
    return np.minimum(distance, cap).astype(np.uint8)


def background_samples(labels: Sequence[np.ndarray], margin_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Which frames each pixel's background colour may be taken from, and how clear of the person it ever gets.

    labels: N label maps `[H, W]` → (`[N, H, W] bool` usable samples, `[H, W] uint8` clearance: the largest
    distance to the person over the frames, capped at `4 * margin_px`).

    A sample is used when the pixel is at least `margin_px` from the person in that frame (the margin keeps the
    person's soft edge, motion blur, compression ringing and contact shadow out: a segmentation boundary is never
    exact), and at least half as far as it ever gets. The second rule prefers the frames where the person is far
    away: the misses of a parser (thin hair strands, a soft shoulder) stay near the silhouette, so a pixel once
    seen well clear of the person need not trust the frames where it was close.
    """
    cap = int(np.clip(4 * margin_px, 1, 255))
    distance = np.stack([distance_to_person(np.asarray(lab), cap) for lab in labels])     # [N, H, W]
    clearance = distance.max(axis=0)
    need = np.maximum(max(margin_px, 1), (clearance + 1) // 2)                            # [H, W]
    return distance >= need[None], clearance


def _masked_median(stack: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel, per-channel lower median over the valid samples.

    stack: `[N, P, C] uint8`, valid: `[N, P] bool` → (`[P, C] uint8` median, 0 where no sample is valid;
    `[P] int` count of valid samples).

    Pixels are grouped by how many valid samples they have, so each group is a plain `np.partition` (linear
    time) at one fixed rank; invalid samples are pushed past 255 so that they sort after every valid one.
    Most pixels are valid in every frame, which makes that largest group a single partition of uint8 data.
    """
    n, p, c = stack.shape
    counts = valid.sum(axis=0)
    out = np.zeros((p, c), np.uint8)
    order = np.argsort(counts, kind="stable")
    sorted_counts = counts[order]
    starts = np.flatnonzero(np.diff(sorted_counts)) + 1
    for group in np.split(order, starts):
        count = int(counts[group[0]])
        if count == 0:
            continue
        # pixel-major [P_group, C, N]: the partition runs along contiguous memory
        values = np.ascontiguousarray(np.moveaxis(stack[:, group], 0, -1))
        if count < n:
            values = values.astype(np.int16)
            invalid = ~valid[:, group].T  # [P_group, N]
            values[np.broadcast_to(invalid[:, None, :], values.shape)] = 512
        rank = (count - 1) // 2
        out[group] = np.partition(values, rank, axis=-1)[..., rank]
    return out, counts


def _solve_membrane(values: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Exact discrete membrane fill: `[H, W, C]` values, `[H, W]` confidence in [0, 1] → `[H, W, C] float64`.

    Pixels with confidence 1 keep their value. The others minimise the sum over 4-neighbour pairs of
    (u_p - u_q)^2 (zero flux across the image border) plus, for confidence c in (0, 1), a data term
    s (u_p - v_p)^2 with s = 4 c / (1 - c): c = 0.5 weighs a pixel's own value like its four neighbours
    together, c = 0 is the plain harmonic (Laplace) fill. One sparse LU factorisation (minimum-degree ordering,
    which suits this symmetric grid matrix) serves all channels.
    """
    import scipy.sparse as sparse
    import scipy.sparse.linalg as sparse_linalg

    h, w, channels = values.shape
    out = values.astype(np.float64)
    unknown = confidence < 1
    n = int(unknown.sum())
    if n == 0:
        return out
    index = np.full((h, w), -1, np.int64)
    index[unknown] = np.arange(n)
    ys, xs = np.nonzero(unknown)
    c = np.clip(confidence[unknown].astype(np.float64), 0.0, 1.0)
    screen = 4.0 * c / (1.0 - c)
    degree = screen.copy()
    rhs = screen[:, None] * out[unknown]
    rows, cols = [np.arange(n)], [np.arange(n)]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        degree += inside
        src = np.flatnonzero(inside)
        dst = index[ny[inside], nx[inside]]
        free = dst >= 0
        rows.append(src[free])
        cols.append(dst[free])
        # fixed neighbours are constants: they move to the right-hand side
        boundary = out[ny[inside][~free], nx[inside][~free]]
        for ch in range(channels):
            rhs[:, ch] += np.bincount(src[~free], weights=boundary[:, ch], minlength=n)
    data = np.concatenate([degree] + [-np.ones(len(r)) for r in rows[1:]])
    matrix = sparse.csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solver = sparse_linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    out[unknown] = solver.solve(rhs)
    return out


def harmonic_fill(image: np.ndarray, known: np.ndarray, max_direct: int = 30_000, band_px: int = 12) -> np.ndarray:
    """Fill the pixels of `image` that are not known with the harmonic interpolation of the known ones.

    image: `[H, W, C]` or `[H, W]` (any numeric dtype); known: `[H, W]` bool, or float confidence in [0, 1]
    (1 = keep the pixel, 0 = unknown, in between = a soft constraint, see `_solve_membrane`); some pixel must
    have confidence > 0. Returns float32 of image's shape, equal to `image` where confidence is 1.

    The harmonic (Laplace) fill is the smoothest surface that meets the surroundings: a large hole gets a soft
    gradient between the colours around it, where diffusion-along-isophotes inpainting (cv2.inpaint) smears
    streaks into holes this large. Exact solves cost ~1 s per 100k unknown pixels, so larger problems
    (> `max_direct` unknowns) are solved coarse-to-fine: the fill is computed at half resolution (recursively),
    which fixes the smooth interior of the hole, and only the pixels within `band_px` of some data are solved
    at full resolution, with the upsampled interior as their inner boundary (within ~0.5 grey level of the
    exact solution, 5-10x faster).
    """
    import cv2

    confidence = np.clip(np.asarray(known, np.float32), 0.0, 1.0)
    if not (confidence > 0).any():
        raise ValueError("harmonic_fill needs at least one known pixel")
    values = np.asarray(image, np.float32)
    flat = values.ndim == 2
    if flat:
        values = values[..., None]
    h, w, channels = values.shape
    n = int((confidence < 1).sum())
    if n <= max_direct or min(h, w) < 16:
        out = _solve_membrane(values, confidence)
    else:
        size = ((w + 1) // 2, (h + 1) // 2)
        # confidence-weighted downsampling: a coarse pixel averages the data under it by confidence
        weight = cv2.resize(confidence, size, interpolation=cv2.INTER_AREA)
        colour = cv2.resize(values * confidence[..., None], size, interpolation=cv2.INTER_AREA)
        colour = colour.reshape(size[1], size[0], channels) / np.maximum(weight, 1e-6)[..., None]
        coarse = harmonic_fill(colour, weight, max_direct, band_px)
        up = cv2.resize(coarse.reshape(size[1], size[0], channels), (w, h), interpolation=cv2.INTER_LINEAR)
        up = up.reshape(h, w, channels)
        # distance to the nearest pixel with data; deeper in the hole than the band, keep the coarse value
        depth = cv2.distanceTransform((confidence <= 0).astype(np.uint8), cv2.DIST_L2, 3)
        fixed = (depth > band_px) & (confidence <= 0)
        out = _solve_membrane(np.where(fixed[..., None], up, values), np.where(fixed, 1.0, confidence))
    out = out.astype(np.float32)
    return out[..., 0] if flat else out
def default_margin(width: int) -> int:
    """Default background erosion (px) for frames `width` pixels wide: 6 px at 512, at least 2."""
    return max(2, int(round(6 * width / 512)))


def estimate_background(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        margin_px: int | None = None, trusted_frames: int | None = None,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Static background plate from a sample of frames and their label maps.

    frames: N RGB frames `[H, W, 3] uint8`; labels: N label maps `[H, W] uint8` (0 = background).
    Pass a bounded sample spread over the clip (e.g. up to ~120 frames, which should cover the person's range of
    motion): besides the inputs, the working memory peaks near 6 bytes x N x H x W (180 MB for 120 frames of
    512x512).
    margin_px: background pixels closer than this to the person are not used (see `background_samples`);
    None scales it with the frame width (`default_margin`: 6 px at 512).

    trusted_frames: a pixel must be seen as background in at least this many frames to be trusted fully; None:
    10% of the frames (at least 2).

    Returns (plate `[H, W, 3] uint8` RGB, seen `[H, W] bool`). `seen` marks pixels that were safely background
    in at least one frame; there the plate is the per-pixel median over those frames (robust to the odd
    mislabelled frame, compression noise and flicker). The rest is filled by `harmonic_fill`.

    Doubtful pixels are only partly trusted: those seen in fewer than `trusted_frames` frames, or never more
    than 3 margins away from the person. They lie at the edge of the person's range, where a few bad label maps
    (a hair clump the parser calls background, a shoulder's soft edge) put person colour into most of their
    samples, and the fill would spread that colour into the hole. They enter the fill as soft constraints whose
    confidence grows with their count and shrinks with their disagreement with a first fill from the solid
    pixels alone (by exp(-(residual / `OUTLIER_GREY`)^2)): a dark hair sample next to a light wall
    is dropped, a doubtful pixel that continues its surroundings is kept.
    """
    if len(frames) == 0 or len(frames) != len(labels):
        raise ValueError(f"estimate_background needs as many label maps as frames (>0), got {len(frames)} "
                         f"frames and {len(labels)} label maps")
    h, w = labels[0].shape[:2]
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        if frame.shape != (h, w, 3) or label.shape != (h, w):
            raise ValueError(f"frame {i}: shape {frame.shape} / labels {label.shape}, expected ({h}, {w}, 3) / "
                             f"({h}, {w})")
    n = len(frames)
    margin = default_margin(w) if margin_px is None else int(margin_px)
    stack = np.stack([np.asarray(f, np.uint8) for f in frames]).reshape(n, h * w, 3)
    valid, clearance = background_samples(labels, margin)
    median, counts = _masked_median(stack, valid.reshape(n, h * w))
    del stack, valid
    seen = (counts > 0).reshape(h, w)
    plate = median.reshape(h, w, 3)
    if not seen.any():
        # nothing was ever background: no information at all, a neutral grey is the least wrong plate
        return np.full((h, w, 3), 127, np.uint8), seen
    trusted = max(2, int(round(0.1 * n))) if trusted_frames is None else max(1, int(trusted_frames))
    solid = (counts >= trusted).reshape(h, w) & (clearance >= 3 * margin)
    if solid.all():
        return plate, seen
    confidence = solid.astype(np.float32)
    doubtful = seen & ~solid
    if solid.any() and doubtful.any():
        # a first fill from the solid pixels alone says what the surroundings predict for the doubtful ones
        predicted = harmonic_fill(plate, solid)
        residual = np.abs(plate[doubtful].astype(np.float32) - predicted[doubtful]).mean(axis=1)
        support = np.minimum(counts.reshape(h, w)[doubtful] / trusted, 1.0)
        # Gaussian in the residual: a cluster of hundreds of dark soft constraints must weigh nothing, since
        # inside the hole nothing else competes with them
        confidence[doubtful] = np.minimum(support * np.exp(-((residual / OUTLIER_GREY) ** 2)), 0.99)
    else:
        confidence[doubtful] = 0.5
    plate = np.clip(np.rint(harmonic_fill(plate, confidence)), 0, 255).astype(np.uint8)
    return plate, seen


def composite_gt(rgb: np.ndarray, labels: np.ndarray, plate: np.ndarray, feather_px: float = 1.0) -> np.ndarray:
    """The training target: `rgb` with its background replaced by `plate`.

    rgb, plate: `[H, W, 3] uint8`; labels: `[H, W] uint8` → `[H, W, 3] uint8`.
    feather_px: standard deviation (pixels) of the Gaussian that softens the person mask (0: hard labels). The
    blend is centred on the label boundary (alpha 0.5 there), so it anti-aliases the seam without keeping a band
    of the frame's own background around the person; beyond ~3 sigma from the boundary the output is exactly the
    plate (outside) or exactly the frame (inside).
    """
    return blend(rgb, plate, person_alpha(labels != BACKGROUND, feather_px))


def person_alpha(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """`[H, W]` mask (bool, or uint8 0/255) → `[H, W] uint8` alpha (255 = opaque), Gaussian-feathered with
    sigma `feather_px`.

    uint8 on purpose: the fixed-point blur is several times faster than a float one, 1/255 steps are finer than
    the 8-bit output can show, and alpha is exactly 0 or 255 wherever the blur does not reach.
    """
    import cv2

    alpha = mask.astype(np.uint8) * np.uint8(255) if mask.dtype == bool else mask
    if feather_px > 0:
        radius = max(1, int(np.ceil(3 * feather_px)))
        alpha = cv2.GaussianBlur(alpha, (2 * radius + 1, 2 * radius + 1), feather_px,
                                 borderType=cv2.BORDER_REPLICATE)
    return alpha


def blend(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha * foreground + (1 - alpha) * background → `[H, W, 3] uint8`, exact where alpha is 0 or opaque.

    foreground, background: `[H, W, 3]` uint8 or float (0..255, rounded to uint8 first); alpha: `[H, W]`, uint8
    (255 = opaque) or float in [0, 1]. OpenCV's blendLinear does it in one pass (~1 ms for 512x512).
    """
    import cv2

    weight = alpha.astype(np.float32)
    if alpha.dtype == np.uint8:
        weight *= np.float32(1 / 255)
    fg = np.ascontiguousarray(_as_uint8(foreground))
    bg = np.ascontiguousarray(_as_uint8(background))
    return cv2.blendLinear(fg, bg, weight, np.float32(1) - weight)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
