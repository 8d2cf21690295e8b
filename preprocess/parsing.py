"""Parsing step: one label map per frame (docs/dataset.md, "Parsing labels").

Built only from what ships offline with the pinned packages:

* MediaPipe face-mesh landmarks (from the landmarks step) place the fine facial regions: lips, mouth interior,
  eyes, brows, the face oval and the jaw line;
* MediaPipe selfie segmentation (the legacy model inside the mediapipe 0.10.14 wheel) gives the person
  silhouette;
* classical refinement splits the silhouette into head (face + hair + ears), neck and torso: a face-aligned
  geometric band decides head versus body at the jaw line, and a skin-colour model learnt on the cheeks of the
  same frame finds where the neck ends and the clothes begin.

Label map: ``[H, W] uint8`` with the values of ``synctalk.data.contract.PARSING_LABELS``.
Landmarks: ``[478, 3] float32`` pixel coordinates (x right, y down, origin at the top-left corner of the image, so
the centre of pixel ``(row, col)`` is ``(col + 0.5, row + 0.5)``); ``z`` is not used here.

`PARSERS` / `make_parser` let a stronger parser (e.g. a face-parsing network with user-supplied weights) be
plugged in later without touching the callers; only ``"mediapipe"`` exists now.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from synctalk.data.contract import FACE_MISSING, N_LANDMARKS, PARSING_LABELS
from synctalk.errors import UserInputError

BACKGROUND = PARSING_LABELS["background"]
HEAD = PARSING_LABELS["head"]
NECK = PARSING_LABELS["neck"]
TORSO = PARSING_LABELS["torso"]
LIPS = PARSING_LABELS["lips"]
MOUTH_INTERIOR = PARSING_LABELS["mouth_interior"]
EYES = PARSING_LABELS["eyes"]
BROWS = PARSING_LABELS["brows"]

# Face-mesh indices with a fixed meaning (canonical MediaPipe topology).
FOREHEAD_TOP = 10      # top of the face oval, on the midline
CHIN = 152             # bottom of the face oval, on the midline
# Where the jaw line ends on each side: the face-oval points at about ear-lobe height (checked on real frames:
# ear lobes / earrings sit just outside these). Below and inward of the jaw line is neck, never head.
JAW_ENDS = (58, 288)

# Geometry of the head band, in units of the face height (forehead-top landmark to chin) and in face-aligned
# coordinates (a: along the eye line, b: downwards, origin halfway between forehead top and chin).
HAIR_HALF_WIDTH = 0.95       # lateral reach of hair/ears from the face centre (the face itself is ~±0.44)
HAIR_TOP = 1.25              # reach above the face centre (forehead-top landmark is at -0.5): tall hair
HAIR_BOTTOM = 1.0            # lower end of the band's ellipse (the jaw line cuts the head off well above it)
HAIR_SIDE_SLOPE = 0.7        # beyond the jaw ends the head/body boundary falls this much per unit outward,
#                              so hair hanging beside the jaw stays head while shoulders stay torso
NECK_HALF_WIDTH = 0.42       # lateral reach of the neck around the chin, where it meets the jaw
NECK_COLUMN_HALF_WIDTH = 0.32  # ... and lower down (measured necks: 0.45-0.55 face heights wide)
NECK_COLUMN_START = 0.15     # how far below the chin the neck narrows to its column
NECK_DEPTH = 0.95            # how far below the chin the neck (and visible chest skin) may go
NECK_MIN_WIDTH = 0.08        # skin bands thinner than this (hair strands) are not neck
NECK_SURE_DEPTH = 0.06       # a strip this deep under the jaw line is neck whatever its colour (chin shadow)
SKIN_MAX_DISTANCE = 3.5      # robust chroma distance (in MAD units) up to which a pixel counts as skin
SKIN_MIN_BRIGHTNESS = 60     # r + g + b below which chromaticity is noise (deep shadow, black fabric)
PERSON_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------------------------
# Polygon helpers


def edges_to_paths(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Order an undirected edge set (such as ``FACEMESH_LIPS``) into vertex paths, one per connected component.

    Every vertex must have degree 1 or 2, so a component is either a closed loop or an open chain. A loop is
    returned without repeating its first vertex; it starts at its smallest index and continues towards the
    smaller of that vertex's two neighbours. A chain starts at its smaller end. Components are sorted by their
    first vertex, so the output is deterministic.
    """
    adjacency: dict[int, list[int]] = {}
    for u, v in edges:
        if u == v:
            raise ValueError(f"self-loop edge ({u}, {v})")
        adjacency.setdefault(u, []).append(v)
        adjacency.setdefault(v, []).append(u)
    for vertex, neighbours in adjacency.items():
        if len(set(neighbours)) != len(neighbours) or len(neighbours) > 2:
            raise ValueError(f"vertex {vertex} has neighbours {sorted(neighbours)}: not a set of simple paths")

    seen: set[int] = set()
    paths: list[list[int]] = []
    # Chains first (start from their ends), then whatever is left is made of loops.
    starts = sorted(v for v, n in adjacency.items() if len(n) == 1) + sorted(adjacency)
    for start in starts:
        if start in seen:
            continue
        path = [start]
        seen.add(start)
        previous, current = None, start
        while True:
            candidates = sorted(n for n in adjacency[current] if n != previous and n not in seen)
            if not candidates:
                break
            previous, current = current, candidates[0]
            path.append(current)
            seen.add(current)
        paths.append(path)
    return sorted(paths, key=lambda p: p[0])


def join_chains(points: np.ndarray, first: Sequence[int], second: Sequence[int]) -> list[int]:
    """One closed polygon from two open chains that bound a region from both sides (e.g. the upper and lower
    edge of a brow): ``first`` followed by ``second`` in the direction that makes the two closing segments
    shortest, so the outline does not cross itself. ``points`` is ``[478, >=2]``."""
    a0, a1 = points[first[0], :2], points[first[-1], :2]
    b0, b1 = points[second[0], :2], points[second[-1], :2]
    keep = np.linalg.norm(a1 - b0) + np.linalg.norm(b1 - a0)
    flip = np.linalg.norm(a1 - b1) + np.linalg.norm(b0 - a0)
    return list(first) + (list(second) if keep <= flip else list(second)[::-1])


def fill_polygon(shape: tuple[int, int], polygon: np.ndarray, supersample: int = 4) -> np.ndarray:
    """Pixels more than half covered by a polygon.

    shape: ``(H, W)``; polygon: ``[K, 2]`` float (x, y) in continuous pixel coordinates (pixel ``(r, c)`` spans
    ``[c, c + 1) x [r, r + 1)``). Returns ``[H, W] bool``.

    cv2.fillPoly alone also paints every pixel the outline touches, which inflates a region by up to a pixel all
    around: harmless for a face, but an eye in a 256-pixel crop is only ~6 pixels tall. Here the polygon is
    rasterised at ``supersample`` x the resolution inside its bounding box and a pixel is kept when more than half
    of its sub-pixels are painted. cv2 still rounds each edge outwards to the sub-pixel grid, i.e. by at most half
    a sub-pixel, which the strict "more than half" absorbs: with 4 x 4 sub-pixels a pixel covered 60% or more is in,
    one covered 40% or less is out.
    """
    import cv2

    height, width = shape
    out = np.zeros((height, width), bool)
    polygon = np.asarray(polygon, np.float64)[:, :2]
    if len(polygon) < 3 or not np.isfinite(polygon).all():
        return out
    x0 = max(int(np.floor(polygon[:, 0].min())), 0)
    y0 = max(int(np.floor(polygon[:, 1].min())), 0)
    x1 = min(int(np.ceil(polygon[:, 0].max())), width)
    y1 = min(int(np.ceil(polygon[:, 1].max())), height)
    if x1 <= x0 or y1 <= y0:
        return out
    k = supersample
    sub = np.zeros(((y1 - y0) * k, (x1 - x0) * k), np.uint8)
    # Sub-pixel (i, j) has its centre at continuous (x0 + (j + 0.5) / k, ...); cv2 puts integer coordinates at
    # pixel centres, hence the -0.5. shift=4 keeps 1/16 sub-pixel precision of the vertices.
    pts = np.round(((polygon - (x0, y0)) * k - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(sub, [pts], 1, lineType=cv2.LINE_8, shift=4)
    # Area averaging of k x k blocks (exact for an integer factor): 0/255 sub-pixels -> painted fraction * 255,
    # where exactly half rounds to 128.
    coverage = cv2.resize(sub * np.uint8(255), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = coverage > 128
    return out


# --------------------------------------------------------------------------------------------------------------
# Face-mesh regions


@dataclass(frozen=True)
class FaceMeshRegions:
    """Ordered landmark index lists of the regions, derived from the face-mesh edge sets of MediaPipe."""

    face_oval: tuple[int, ...]            # closed loop
    jaw: tuple[int, ...]                  # face-oval sub-path JAW_ENDS[0] -> CHIN -> JAW_ENDS[1]
    lips_outer: tuple[int, ...]           # closed loop
    lips_inner: tuple[int, ...]           # closed loop (the mouth opening)
    eyes: tuple[tuple[int, ...], ...]     # two closed loops (eyelid margins)
    brows: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per brow: its two edge chains
    cheeks: tuple[int, ...]               # points spanning the cheeks and nose: skin colour sample area


@functools.cache
def face_mesh_regions() -> FaceMeshRegions:
    """The region index lists (computed once from ``mp.solutions.face_mesh_connections``)."""
    from synctalk.runtime import import_mediapipe

    connections = import_mediapipe().solutions.face_mesh_connections

    def single_loop(edges, what: str) -> tuple[int, ...]:
        paths = edges_to_paths(edges)
        if len(paths) != 1:
            raise RuntimeError(f"face mesh {what}: expected one closed loop, got {len(paths)} paths")
        return tuple(paths[0])

    oval = single_loop(connections.FACEMESH_FACE_OVAL, "face oval")
    # The jaw: walk the oval from one jaw end to the other through the chin.
    i0, i1 = oval.index(JAW_ENDS[0]), oval.index(JAW_ENDS[1])
    forward = [oval[(i0 + k) % len(oval)] for k in range((i1 - i0) % len(oval) + 1)]
    backward = [oval[(i0 - k) % len(oval)] for k in range((i0 - i1) % len(oval) + 1)]
    jaw = forward if CHIN in forward else backward

    lips = edges_to_paths(connections.FACEMESH_LIPS)
    if len(lips) != 2:
        raise RuntimeError(f"face mesh lips: expected two loops (outer, inner), got {len(lips)}")
    # The outer loop encloses the inner one; 61 / 291 are the outer mouth corners in the canonical mesh.
    outer, inner = (lips[0], lips[1]) if 61 in lips[0] else (lips[1], lips[0])

    eyes = tuple(single_loop(e, "eye") for e in (connections.FACEMESH_RIGHT_EYE, connections.FACEMESH_LEFT_EYE))
    brows = []
    for edges in (connections.FACEMESH_RIGHT_EYEBROW, connections.FACEMESH_LEFT_EYEBROW):
        chains = edges_to_paths(edges)
        if len(chains) != 2:
            raise RuntimeError(f"face mesh eyebrow: expected two edge chains, got {len(chains)}")
        brows.append((tuple(chains[0]), tuple(chains[1])))
    # Cheek-to-cheek below the eyes and above the mouth (mesh points 116/345 on the cheekbones, 205/425 on the
    # cheeks, 6 on the nose bridge, 2 under the nose): the most reliably bare skin of a face (no hair fringe,
    # no beard).
    cheeks = (116, 6, 345, 425, 2, 205)
    return FaceMeshRegions(face_oval=oval, jaw=tuple(jaw), lips_outer=tuple(outer), lips_inner=tuple(inner),
                           eyes=eyes, brows=tuple(brows), cheeks=cheeks)


@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned 2D frame: ``a`` along the eye line (towards the subject's left eye, i.e. image right for a
    frontal face), ``b`` perpendicular, downwards (forehead to chin), both in units of ``size`` pixels (forehead-
    top landmark to chin), origin halfway between the two."""

    origin: np.ndarray   # [2] pixels
    ex: np.ndarray       # [2] unit vector of a
    ey: np.ndarray       # [2] unit vector of b
    size: float          # pixels

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> FaceFrame:
        regions = face_mesh_regions()
        right_eye = landmarks[list(regions.eyes[0]), :2].mean(axis=0)
        left_eye = landmarks[list(regions.eyes[1]), :2].mean(axis=0)
        top, chin = landmarks[FOREHEAD_TOP, :2], landmarks[CHIN, :2]
        ex = left_eye - right_eye
        if np.linalg.norm(ex) < 1e-6:  # degenerate landmarks: fall back to the image axes
            ex = np.array([1.0, 0.0])
        ex = ex / np.linalg.norm(ex)
        ey = np.array([-ex[1], ex[0]])  # +90 degrees in y-down image coordinates
        if (chin - top) @ ey < 0:       # mirrored input: keep b pointing from forehead to chin
            ey = -ey
        size = max(float(np.linalg.norm(chin - top)), 1.0)
        return cls(origin=(top + chin) / 2, ex=ex, ey=ey, size=size)

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        """``[..., 2]`` pixel coordinates -> ``[..., 2]`` face coordinates (a, b)."""
        d = np.asarray(xy, np.float64)[..., :2] - self.origin
        return np.stack([d @ self.ex, d @ self.ey], axis=-1) / self.size

    def to_image(self, ab: np.ndarray) -> np.ndarray:
        """``[..., 2]`` face coordinates -> ``[..., 2]`` pixel coordinates."""
        ab = np.asarray(ab, np.float64) * self.size
        return self.origin + ab[..., :1] * self.ex + ab[..., 1:2] * self.ey


def jaw_boundary(landmarks: np.ndarray, frame: FaceFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The head/body boundary under the face as knots of a function ``b = f(a)`` in face coordinates (`FaceFrame`):
    the face-oval jaw from one jaw end through the chin to the other, continued outwards and downwards beyond the
    jaw ends (slope `HAIR_SIDE_SLOPE`), so that hair and ears beside the jaw are above it and shoulders below.
    Returns ``(a [K], b [K])`` float64 with ``a`` strictly increasing (a turned head folds its jaw over in the
    image; sorting by ``a`` keeps one boundary)."""
    frame = frame or FaceFrame.from_landmarks(landmarks)
    jaw_ab = frame.to_face(landmarks[list(face_mesh_regions().jaw), :2])
    jaw_ab = jaw_ab[np.argsort(jaw_ab[:, 0], kind="stable")]
    far = 4.0  # face heights: beyond any frame
    knots_a = np.concatenate([[jaw_ab[0, 0] - far], jaw_ab[:, 0], [jaw_ab[-1, 0] + far]])
    knots_b = np.concatenate([[jaw_ab[0, 1] + HAIR_SIDE_SLOPE * far], jaw_ab[:, 1],
                              [jaw_ab[-1, 1] + HAIR_SIDE_SLOPE * far]])
    knots_a = np.maximum.accumulate(knots_a) + np.arange(len(knots_a)) * 1e-9
    return knots_a, knots_b


def jaw_line(landmarks: np.ndarray, width: int) -> np.ndarray:
    """``[W] float32``: for every image column, the y (pixels) of the head/body boundary of `jaw_boundary` (the
    jaw under the face, falling gently outwards beyond the jaw ends). Column-wise, so exact for an upright head
    and an approximation under strong roll; the label maps use the face-aligned boundary itself."""
    frame = FaceFrame.from_landmarks(landmarks)
    knots_a, knots_b = jaw_boundary(landmarks, frame)
    # Densely sample the boundary in the image and read it back per column.
    a = np.linspace(knots_a[0], knots_a[-1], 4096)
    xy = frame.to_image(np.stack([a, np.interp(a, knots_a, knots_b)], axis=-1))
    order = np.argsort(xy[:, 0], kind="stable")
    return np.interp(np.arange(width) + 0.5, xy[order, 0], xy[order, 1]).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Person segmentation


class PersonSegmenter:
    """Person probability per pixel from MediaPipe selfie segmentation (the general 256x256 model, shipped in the
    mediapipe wheel, so nothing is downloaded).

    ``segmenter(rgb)`` with ``rgb`` ``[H, W, 3] uint8`` returns ``[H, W] float32`` in [0, 1]. The network works at
    256x256, so its mask edges are soft and blocky once upsampled; with ``refine`` an edge-aware guided filter
    (guide: the image) snaps them to the image edges (hair outline, shoulders). Frames are independent: the model
    has no state, temporal smoothing is done by `parse_frames`.
    """

    def __init__(self, model_selection: int = 0, refine: bool = True):
        from synctalk.runtime import import_mediapipe, native_stderr_captured

        self._captured = native_stderr_captured
        mp = import_mediapipe()
        with native_stderr_captured():
            self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
        self.refine = refine

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        _check_rgb(rgb)
        if self._model is None:
            raise RuntimeError("PersonSegmenter is closed")
        with self._captured():
            mask = self._model.process(np.ascontiguousarray(rgb)).segmentation_mask
        prob = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
        if self.refine:
            prob = refine_probability(rgb, prob)
        return prob

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def refine_probability(rgb: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Edge-aware refinement of a soft mask ``[H, W] float32`` with the image ``[H, W, 3] uint8`` as guide: a
    grey-level guided filter (He et al.) whose linear coefficients are fitted at half resolution ("fast guided
    filter", ~3 ms at 512x512 against 15 ms for cv2.ximgproc's grey one and 45 ms in colour). Radius ~1/80 of the
    frame side: the selfie model already resolves ~1/256. Where the image has an edge the mask takes its shape;
    in flat areas it is only smoothed. Returns ``[H, W] float32`` in [0, 1]."""
    import cv2

    height, width = prob.shape
    guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
    step = 2 if min(height, width) >= 128 else 1
    small = (max(1, width // step), max(1, height // step))
    guide_s = cv2.resize(guide, small, interpolation=cv2.INTER_AREA)
    prob_s = cv2.resize(prob.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    radius = max(1, round(max(height, width) / 80 / step))
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide_s), mean(prob_s)
    cov_ip = mean(guide_s * prob_s) - mean_i * mean_p
    var_i = mean(guide_s * guide_s) - mean_i * mean_i
    # eps: intensity variance (in [0, 1] units) below which a window counts as flat, i.e. contrast under ~0.06.
    a = cov_ip / (var_i + 4e-3)
    b = mean_p - a * mean_i
    a_full = cv2.resize(mean(a), (width, height), interpolation=cv2.INTER_LINEAR)
    b_full = cv2.resize(mean(b), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(a_full * guide + b_full, 0.0, 1.0)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"expected an RGB frame [H, W, 3] uint8, got {type(rgb).__name__} {shape} "
                         f"{getattr(rgb, 'dtype', '')}")


# --------------------------------------------------------------------------------------------------------------
# One frame


def _valid_landmarks(landmarks: np.ndarray | None) -> np.ndarray | None:
    if landmarks is None:
        return None
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape[0] != N_LANDMARKS or landmarks.ndim != 2 or landmarks.shape[1] < 2:
        raise ValueError(f"landmarks must be [{N_LANDMARKS}, 3] pixels, got {landmarks.shape}")
    if not np.isfinite(landmarks[:, :2]).all():
        return None
    return landmarks


def skin_distance(rgb: np.ndarray, sample: np.ndarray) -> np.ndarray | None:
    """How far each pixel's colour is from the skin colours in ``sample``.

    rgb: ``[h, w, 3] uint8``; sample: ``[n, 3] uint8`` face-skin pixels. Returns ``[h, w] float32``: distance in
    robust standard deviations (median / MAD) of the sample in rg-chromaticity ``(r, g) / (r + g + b)``; +inf
    where a pixel is too dark to judge; None when the sample is too small to learn from.

    Chromaticity ignores brightness, so the neck, in the chin's shadow, matches the lit cheeks (measured on the
    test clips: neck <= 2.5, white collars, suits, shirts and scarves >= 5).
    """
    if len(sample) < 30:
        return None
    chroma_sample, _ = _chromaticity(sample.reshape(-1, 1, 3))
    chroma_sample = chroma_sample.reshape(-1, 2)
    centre = np.median(chroma_sample, axis=0)
    # MAD floor 0.01: evenly lit cheeks vary very little, compression and the neck's shading do more than that.
    spread = np.maximum(1.4826 * np.median(np.abs(chroma_sample - centre), axis=0), 0.01)
    chroma, brightness = _chromaticity(rgb)
    dr = (chroma[..., 0] - centre[0]) / spread[0]
    dg = (chroma[..., 1] - centre[1]) / spread[1]
    distance = np.sqrt(dr * dr + dg * dg)
    distance[brightness < SKIN_MIN_BRIGHTNESS] = np.inf
    return distance


def _chromaticity(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[h, w, 3] uint8`` -> (``[h, w, 2] float32`` (r, g) / (r + g + b), ``[h, w] float32`` r + g + b)."""
    import cv2

    r, g, b = cv2.split(rgb.astype(np.float32))
    total = r + g + b
    scale = 1.0 / (total + 1.0)
    return np.stack([r * scale, g * scale], axis=-1), total


def head_neck_zones(landmarks: np.ndarray, frame: FaceFrame | None = None) -> dict[str, np.ndarray]:
    """The face-aligned zones that split the person, as image polygons ``[K, 2]`` float64 (x, y) pixels:

    * ``head``: where hair and ears may be: an ellipse around the face, wider than it (`HAIR_HALF_WIDTH`) and
      reaching far above the forehead (`HAIR_TOP`), cut off below by the jaw line of `jaw_boundary`;
    * ``neck``: under the jaw line, within `NECK_HALF_WIDTH` of the chin near the jaw, narrowing to
      `NECK_COLUMN_HALF_WIDTH` at `NECK_COLUMN_START` below the chin, down to `NECK_DEPTH` below it;
    * ``neck_top``: the strip `NECK_SURE_DEPTH` deep right under the jaw, in the middle of the neck zone.

    The head and neck zones share the jaw line, so the neck starts exactly where the head ends.
    """
    frame = frame or FaceFrame.from_landmarks(landmarks)
    knots_a, knots_b = jaw_boundary(landmarks, frame)
    chin_a, chin_b = frame.to_face(landmarks[CHIN, :2])

    def jaw(a: np.ndarray) -> np.ndarray:
        return np.interp(a, knots_a, knots_b)

    def between(a: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        # The region {top(a) <= b <= bottom(a)} as one polygon: along the top left to right, back along the bottom.
        bottom = np.maximum(bottom, top)
        return frame.to_image(np.concatenate([np.stack([a, top], -1), np.stack([a, bottom], -1)[::-1]]))

    a = np.linspace(-HAIR_HALF_WIDTH, HAIR_HALF_WIDTH, 97)
    centre_b, half_b = (HAIR_BOTTOM - HAIR_TOP) / 2, (HAIR_BOTTOM + HAIR_TOP) / 2
    arc = half_b * np.sqrt(np.clip(1 - (a / HAIR_HALF_WIDTH) ** 2, 0, 1))
    head = between(a, centre_b - arc, np.minimum(centre_b + arc, jaw(a)))
    # The neck zone: as wide as the jaw where it meets it, then a narrower column (a neck is narrower than the jaw;
    # light hair hanging beside it matches the skin's colour and must stay out).
    a = np.linspace(chin_a - NECK_HALF_WIDTH, chin_a + NECK_HALF_WIDTH, 49)
    w, low = NECK_COLUMN_HALF_WIDTH, chin_b + NECK_COLUMN_START
    sides = [[chin_a + w, low], [chin_a + w, chin_b + NECK_DEPTH], [chin_a - w, chin_b + NECK_DEPTH], [chin_a - w, low]]
    neck = frame.to_image(np.concatenate([np.stack([a, jaw(a)], -1), sides]))
    a = np.linspace(chin_a - 0.75 * NECK_HALF_WIDTH, chin_a + 0.75 * NECK_HALF_WIDTH, 37)
    neck_top = between(a, jaw(a), jaw(a) + NECK_SURE_DEPTH)
    return {"head": head, "neck": neck, "neck_top": neck_top}


def _fill_zone(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """``[H, W] bool`` of a coarse zone polygon (plain cv2 fill: a pixel more or less does not matter here)."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round((polygon - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _polygon_box(shape: tuple[int, int], polygon: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of a polygon's bounding box clipped to the image; None when outside it."""
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
    x0, x1 = max(x0, 0), min(x1, shape[1])
    y0, y1 = max(y0, 0), min(y1, shape[0])
    return (slice(y0, y1), slice(x0, x1)) if x1 > x0 and y1 > y0 else None


def parse_frame(rgb: np.ndarray, landmarks: np.ndarray | None, person_prob: np.ndarray) -> np.ndarray:
    """Label map of one frame.

    rgb: ``[H, W, 3] uint8``. landmarks: ``[478, 3] float32`` face-mesh points in pixels, or None when the frame
    has no face (then the whole person is torso). person_prob: ``[H, W] float32`` in [0, 1] (`PersonSegmenter`,
    possibly smoothed over time). Returns ``[H, W] uint8`` with `PARSING_LABELS` values.

    Head = the face oval plus the person pixels inside a face-aligned band around it (hair, ears) that lie above
    the jaw line and its outward continuation; neck = skin-coloured person pixels under the jaw, connected to it;
    torso = the rest of the person. The fine regions are filled from the landmark contours on top.
    """
    import cv2

    _check_rgb(rgb)
    height, width = rgb.shape[:2]
    if person_prob.shape != (height, width):
        raise ValueError(f"person_prob is {person_prob.shape}, the frame is {(height, width)}")
    person = person_prob > PERSON_THRESHOLD
    labels = np.where(person, TORSO, BACKGROUND).astype(np.uint8)
    landmarks = _valid_landmarks(landmarks)
    if landmarks is None:
        return labels

    regions = face_mesh_regions()
    frame = FaceFrame.from_landmarks(landmarks)
    pts = landmarks[:, :2]
    shape = (height, width)
    zones = head_neck_zones(landmarks, frame)

    # Head: the face oval, plus the person inside the band around it (hair, ears) down to the jaw line.
    oval = fill_polygon(shape, pts[list(regions.face_oval)])
    head = (person & _fill_zone(shape, zones["head"])) | oval

    # Neck: under the jaw, in a column around the chin, person pixels of the face's skin colour connected to the
    # jaw line. The strip right under the jaw is neck whatever its colour (the chin's shadow, a beard).
    neck_zone = person & ~head & _fill_zone(shape, zones["neck"])
    sure = neck_zone & _fill_zone(shape, zones["neck_top"])
    neck = sure
    box = _polygon_box(shape, zones["neck"])
    if box is not None and neck_zone[box].any():
        distance = skin_distance(rgb[box], rgb[fill_polygon(shape, pts[list(regions.cheeks)])])
        if distance is not None:
            skin = ((distance <= SKIN_MAX_DISTANCE) & neck_zone[box]).astype(np.uint8)
            # Close pinholes (highlights, stubble, an Adam's apple's shadow), then open with a wider kernel: that
            # cuts off thin skin-coloured strands (light hair hanging beside the neck) and specks, while the neck
            # itself, a column several times wider, survives. Kernels scale with the face.
            close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, round(frame.size * 0.03)) | 1,) * 2)
            open_ = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, round(frame.size * NECK_MIN_WIDTH)) | 1,) * 2)
            skin = cv2.morphologyEx(skin, cv2.MORPH_CLOSE, close)
            skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, open_).astype(bool)
            candidate = (neck_zone[box] & skin) | sure[box]
            _, components = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
            touching = np.unique(components[sure[box]])
            neck = sure.copy()
            neck[box] |= np.isin(components, touching[touching > 0])
    labels[neck] = NECK
    labels[head] = HEAD

    # Fine regions, later ones win where contours overlap (eyes over brows can touch on a frown).
    for chains in regions.brows:
        labels[fill_polygon(shape, pts[join_chains(pts, *chains)])] = BROWS
    for eye in regions.eyes:
        labels[fill_polygon(shape, pts[list(eye)])] = EYES
    labels[fill_polygon(shape, pts[list(regions.lips_outer)])] = LIPS
    labels[fill_polygon(shape, pts[list(regions.lips_inner)])] = MOUTH_INTERIOR
    return labels


# --------------------------------------------------------------------------------------------------------------
# A clip

# A parser labels one frame: (rgb [H, W, 3] uint8, landmarks [478, 3] float32 pixels or None, person probability
# [H, W] float32) -> [H, W] uint8 label map. `parse_frames` feeds it and does the temporal part.
Parser = Callable[[np.ndarray, "np.ndarray | None", np.ndarray], np.ndarray]


def parse_frames(frames: Iterable[np.ndarray], landmarks: np.ndarray, face_flags: np.ndarray,
                 segmenter: PersonSegmenter | None = None, parser: Parser | None = None, window: int = 5,
                 workers: int = 1) -> Iterator[np.ndarray]:
    """Label maps of a clip, in order, one per frame, streaming.

    frames: iterable of ``[H, W, 3] uint8`` RGB frames (e.g. `synctalk.io.media.read_frames`). landmarks:
    ``[N, 478, 3] float32`` pixels. face_flags: ``[N] uint8`` (0 = no face: that frame's landmarks are ignored,
    1 detected, 2 interpolated). segmenter: a `PersonSegmenter` to use (left open); None makes and closes one.
    parser: the per-frame `Parser` (default `parse_frame`). window: the person probability of each frame is the
    average over ``window`` frames centred on it (odd; triangular weights, so the frame itself counts most): the
    silhouette stops flickering on a static background and a moving edge does not lag, as the window is
    symmetric. 1 turns it off. workers: threads running the per-frame parser while segmentation goes on in order.

    Yields ``[H, W] uint8`` label maps. At most ``window + 2 * workers`` frames are held, whatever the clip length.
    """
    landmarks = np.asarray(landmarks)
    face_flags = np.asarray(face_flags)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (N_LANDMARKS, 3):
        raise UserInputError(f"landmarks must be [N, {N_LANDMARKS}, 3], got {landmarks.shape}")
    if face_flags.shape != (len(landmarks),):
        raise UserInputError(f"face_flags must be [N] with N = {len(landmarks)} (the landmark count), got "
                             f"{face_flags.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd frame count >= 1, got {window}")
    own = segmenter is None
    segmenter = PersonSegmenter() if own else segmenter
    try:
        yield from _parse_stream(frames, landmarks, face_flags, segmenter, parser or parse_frame, window // 2,
                                 max(1, workers))
    finally:
        if own:
            segmenter.close()


def _parse_stream(frames, landmarks, face_flags, segmenter, parser, radius, workers) -> Iterator[np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    n_expected = len(landmarks)
    window: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (rgb, person_prob) of frames first, first + 1, ...
    first = 0       # index of window[0]
    next_out = 0    # next frame to hand to the parser
    pending: deque = deque()

    def submit(pool: ThreadPoolExecutor, index: int) -> None:
        last = first + len(window) - 1
        lo, hi = max(first, index - radius), min(last, index + radius)
        # Triangular weights; at the clip ends the window is cut and the remaining weights renormalised.
        total = np.zeros_like(window[index - first][1])
        weight_sum = 0.0
        for k in range(lo, hi + 1):
            weight = float(radius + 1 - abs(k - index))
            total += weight * window[k - first][1]
            weight_sum += weight
        face = landmarks[index] if face_flags[index] != FACE_MISSING else None
        pending.append(pool.submit(parser, window[index - first][0], face, total / weight_sum))

    seen = 0
    with ThreadPoolExecutor(workers) as pool:
        for rgb in frames:
            if seen >= n_expected:
                raise UserInputError(f"more frames than landmark sets ({n_expected}); rerun the landmarks step on "
                                     "the same frames")
            window.append((rgb, segmenter(rgb)))
            seen += 1
            while next_out + radius < seen:
                submit(pool, next_out)
                next_out += 1
                while first < next_out - radius:
                    window.popleft()
                    first += 1
            while len(pending) > workers:
                yield pending.popleft().result()
        if seen != n_expected:
            raise UserInputError(f"{seen} frames but {n_expected} landmark sets; rerun the landmarks step on the "
                                 "same frames")
        while next_out < seen:
            submit(pool, next_out)
            next_out += 1
        while pending:
            yield pending.popleft().result()


# --------------------------------------------------------------------------------------------------------------
# Pluggable parsers

# name -> factory of a per-frame `Parser`. A parser needing user-supplied weights registers a factory that takes
# them as options (e.g. `weights=PATH`) and raises UserInputError when they are missing; `parse_frames` gives
# every parser the same smoothed person probability and streaming.
PARSERS: dict[str, Callable[..., Parser]] = {"mediapipe": lambda: parse_frame}
DEFAULT_PARSER = "mediapipe"


def make_parser(name: str = DEFAULT_PARSER, **options) -> Parser:
    """The per-frame parser registered as ``name`` (config key ``preprocess.parser``), built with ``options``."""
    factory = PARSERS.get(name)
    if factory is None:
        raise UserInputError(f"unknown parser '{name}' (preprocess.parser); available: {', '.join(sorted(PARSERS))}. "
                             "A parser that needs its own weights must first be registered in "
                             "preprocess.parsing.PARSERS")
    return factory(**options)
