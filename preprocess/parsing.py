"""Step `parsing`: per-frame label maps (docs/dataset.md "Parsing labels") from what ships offline.

- Person silhouette: MediaPipe selfie segmentation (inside the mediapipe 0.10.14 wheel), edges snapped to the
  image with a guided filter, averaged over 3 frames centred on the current one (temporally stable, no lag).
- Head vs neck vs torso: the jaw line of the face mesh splits the person. Above it, inside a band a bit wider
  than the face, is head (skin, hair, ears). Below the jaw, a column under the chin whose pixels match the
  subject's skin colour (learned from the cheeks of the same frame) is neck; the rest is torso.
- Lips, mouth interior, eyes and brows: polygons of the face mesh.

A stronger parser that needs user-supplied weights can be registered in PARSERS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from synctalk.data.contract import FACE_MISSING, PARSING_LABELS
from synctalk.errors import UserInputError

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
JAW = (132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361)  # earlobe to earlobe
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
        (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46), (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
CHEEKS = ((117, 118, 101, 36, 205, 187, 123), (346, 347, 330, 266, 425, 411, 352))
FOREHEAD_TOP, CHIN = 10, 152

Parser = Callable[[np.ndarray, "np.ndarray | None", np.ndarray], np.ndarray]


class PersonSegmenter:
    """MediaPipe selfie segmentation (general model, in the wheel): `segmenter(rgb) -> [H, W] float32` person
    probability, edges refined with a guided filter on the image."""

    def __init__(self):
        from synctalk.runtime import import_mediapipe, native_stderr_captured

        mp = import_mediapipe()
        self._quiet = native_stderr_captured
        with self._quiet():
            self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._model.close()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        with self._quiet():
            prob = self._model.process(np.ascontiguousarray(rgb)).segmentation_mask
        prob = np.asarray(prob, np.float32)
        # Snap the model's soft 256x256 edge to image edges. The guide must be float in [0, 1] for eps to mean
        # "edges weaker than ~0.03 in intensity are smoothed over".
        radius = max(2, rgb.shape[0] // 64)
        guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return np.clip(cv2.ximgproc.guidedFilter(guide, prob, radius, 1e-3), 0, 1)


def _polygon(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def jaw_line(landmarks: np.ndarray, width: int) -> np.ndarray:
    """y of the jaw line for every column `[W]`: the lower jaw of the face mesh between the earlobes, held flat at
    earlobe level beyond them (ears and the sides of the head and hair sit above it, the neck below)."""
    jaw = landmarks[list(JAW), :2]
    order = np.argsort(jaw[:, 0])
    return np.interp(np.arange(width), jaw[order, 0], jaw[order, 1]).astype(np.float32)


def _colour_distance(image: np.ndarray, samples: np.ndarray, floor: float) -> np.ndarray:
    """[h, w] Mahalanobis distance of every pixel's colour `[h, w, C]` to the samples' distribution `[S, C]`."""
    mean = samples.mean(axis=0)
    whiten = np.linalg.cholesky(np.linalg.inv(np.cov(samples.T) + np.eye(samples.shape[1]) * floor))
    diff = (image.reshape(-1, image.shape[-1]) - mean) @ whiten
    return np.sqrt((diff ** 2).sum(axis=1)).reshape(image.shape[:2]).astype(np.float32)


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if rows.size else None


def skin_mask(rgb: np.ndarray, landmarks: np.ndarray, where: np.ndarray) -> np.ndarray:
    """[H, W] bool, inside `where` only: pixels whose chroma (YCrCb) is close to the cheeks' (Mahalanobis
    distance < 7: a neck in shadow is ~6, fabric ~9) and that keep at least 40% of the cheeks' redness (a white
    collar is chroma-neutral and would otherwise pass)."""
    import cv2

    out = np.zeros(rgb.shape[:2], bool)
    box = _box(where)
    cheeks = np.zeros(rgb.shape[:2], bool)
    for cheek in CHEEKS:
        cheeks |= _polygon(rgb.shape[:2], landmarks[list(cheek), :2])
    cheek_box = _box(cheeks)
    if box is None or cheek_box is None:
        return out
    samples = cv2.cvtColor(rgb[cheek_box], cv2.COLOR_RGB2YCrCb).astype(np.float32)[cheeks[cheek_box]][:, 1:]
    if len(samples) < 20:
        return out
    ycrcb = cv2.cvtColor(rgb[box], cv2.COLOR_RGB2YCrCb).astype(np.float32)
    distance = _colour_distance(ycrcb[..., 1:], samples, floor=4.0)  # floor: evenly lit cheeks vary little
    redness = ycrcb[..., 1] - 128
    out[box] = (distance < 7.0) & (redness > 0.4 * (samples[:, 0].mean() - 128)) & where[box]
    return out


def hair_mask(rgb: np.ndarray, person: np.ndarray, landmarks: np.ndarray, where: np.ndarray) -> np.ndarray:
    """[H, W] bool, inside `where` only: person pixels whose colour (Lab) matches the hair above the forehead
    (all False when too little hair is visible there to learn its colour)."""
    import cv2

    out = np.zeros(rgb.shape[:2], bool)
    pts = landmarks[:, :2]
    face_h = float(pts[CHIN, 1] - pts[FOREHEAD_TOP, 1])
    top = int(max(pts[FOREHEAD_TOP, 1] - 0.08 * face_h, 0))
    x0 = int(max(pts[FOREHEAD_TOP, 0] - 0.4 * face_h, 0))
    x1 = int(min(pts[FOREHEAD_TOP, 0] + 0.4 * face_h, rgb.shape[1]))
    box = _box(where & person)
    if box is None or top < 2 or x1 <= x0:
        return out
    above = person[:top, x0:x1]
    samples = cv2.cvtColor(rgb[:top, x0:x1], cv2.COLOR_RGB2LAB).astype(np.float32)[above]
    if len(samples) < 50:
        return out
    lab = cv2.cvtColor(rgb[box], cv2.COLOR_RGB2LAB).astype(np.float32)
    out[box] = (_colour_distance(lab, samples, floor=9.0) < 3.0) & where[box] & person[box]
    return out


def parse_frame(rgb: np.ndarray, landmarks: np.ndarray | None, person_prob: np.ndarray) -> np.ndarray:
    """Label map `[H, W] uint8` of one frame (see the module docstring). `landmarks` `[478, 3]` pixels or None
    (no face: the whole person is torso)."""
    import cv2

    height, width = rgb.shape[:2]
    labels = np.zeros((height, width), np.uint8)
    person = person_prob > 0.5
    labels[person] = PARSING_LABELS["torso"]
    if landmarks is None:
        return labels
    pts = landmarks[:, :2]
    face = _polygon((height, width), pts[list(FACE_OVAL)])
    face_w = float(pts[454, 0] - pts[234, 0])
    face_h = float(pts[CHIN, 1] - pts[FOREHEAD_TOP, 1])
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    jaw_y = jaw_line(landmarks, width)[None, :]
    centre_x = float((pts[234, 0] + pts[454, 0]) / 2)
    band = np.abs(xs - centre_x) < 0.5 * face_w + 0.45 * face_w       # hair and ears reach past the face
    above_jaw = ys < jaw_y
    head = (person & above_jaw & band) | face
    # Long hair hangs below earlobe level at the sides: hair-coloured pixels there, connected to the head.
    sides = band & ~above_jaw & (ys < pts[CHIN, 1] - 0.1 * face_h) & (np.abs(xs - centre_x) > 0.45 * face_w)
    hanging = hair_mask(rgb, person, landmarks, sides)
    if hanging.any():
        count, components = cv2.connectedComponents((hanging | head).astype(np.uint8))
        head |= hanging & np.isin(components, np.unique(components[head]))
    # Neck: skin-coloured person pixels under the jaw, in a column under the chin, connected to the jaw line;
    # collar and clothes (not skin) stay torso.
    chin_x = float(pts[CHIN, 0])
    neck_zone = ~above_jaw & (np.abs(xs - chin_x) < 0.45 * face_w) & (ys < pts[CHIN, 1] + 0.8 * face_h)
    skin = skin_mask(rgb, landmarks, person & neck_zone & ~head)
    kernel = np.ones((7, 7), np.uint8)
    candidate = cv2.morphologyEx(skin.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    candidate = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, components = cv2.connectedComponents(candidate)
    touching = np.unique(components[(ys < jaw_y + 0.08 * face_h) & (components > 0)])
    neck = np.isin(components, touching[touching > 0]) & person & ~head
    labels[head] = PARSING_LABELS["head"]
    labels[neck] = PARSING_LABELS["neck"]
    shape = (height, width)
    for brow in BROWS:
        labels[_polygon(shape, pts[list(brow)])] = PARSING_LABELS["brows"]
    for eye in EYES:
        labels[_polygon(shape, pts[list(eye)])] = PARSING_LABELS["eyes"]
    labels[_polygon(shape, pts[list(OUTER_LIPS)])] = PARSING_LABELS["lips"]
    labels[_polygon(shape, pts[list(INNER_LIPS)])] = PARSING_LABELS["mouth_interior"]
    return labels


PARSERS: dict[str, Callable[[], Parser]] = {"mediapipe": lambda: parse_frame}


def make_parser(name: str) -> Parser:
    """The parser registered as `name` (preprocess.parser)."""
    if name not in PARSERS:
        raise UserInputError(f"unknown parser '{name}' (preprocess.parser); available: {', '.join(PARSERS)}")
    return PARSERS[name]()


def parse_frames(frames: Iterable[np.ndarray], landmarks: np.ndarray, face_flags: np.ndarray,
                 parser: Parser | None = None, segmenter: PersonSegmenter | None = None,
                 window: int = 3, workers: int = 1) -> Iterator[np.ndarray]:
    """Label maps of a clip, in order. The person probability is averaged over `window` frames centred on each
    frame (one frame of look-ahead, so nothing lags). Segmentation runs in order; the per-frame parsing runs on
    `workers` threads. Memory holds a few frames, whatever the clip's length."""
    from concurrent.futures import ThreadPoolExecutor

    parser = parser or parse_frame
    own = segmenter is None
    segmenter = segmenter or PersonSegmenter()
    half = window // 2
    buffer: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
    pending: deque = deque()

    def submit(pool: ThreadPoolExecutor, centre: int) -> None:
        index, rgb, _ = next(item for item in buffer if item[0] == centre)
        prob = np.mean([p for i, _, p in buffer if abs(i - centre) <= half], axis=0)
        lms = None if face_flags[index] == FACE_MISSING else landmarks[index]
        pending.append(pool.submit(parser, rgb, lms, prob))

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            next_out = 0
            for index, rgb in enumerate(frames):
                buffer.append((index, rgb, segmenter(rgb)))
                if index - next_out >= half:
                    submit(pool, next_out)
                    next_out += 1
                    while buffer and buffer[0][0] < next_out - half:
                        buffer.popleft()
                while len(pending) > 2 * max(1, workers):
                    yield pending.popleft().result()
            while buffer and next_out <= buffer[-1][0]:
                submit(pool, next_out)
                next_out += 1
            while pending:
                yield pending.popleft().result()
    finally:
        if own:
            segmenter.close()
