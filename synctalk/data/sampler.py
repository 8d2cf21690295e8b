"""Ray batches for training, streamed from a subject directory (one frame per batch; memory bounded by the
dataset's frame cache).

Each batch holds rays of one frame: pixel coordinates, target colours, the colour behind the head (the torso plate
for the head stage, the background plate for the torso stage) and per-ray region flags from the parsing map and
landmarks. Two layouts:

- random rays: `head_fraction` of them inside the focus region (the head, parsing HEAD_LABELS, or with
  `focus="torso"` the neck and torso), `box_fraction` in its bounding box grown by a quarter per side (the halo
  around the head, where a field leaves haze), the rest anywhere;
- a square patch (`patch=P`): P x P neighbouring pixels around the mouth (or a random head point), for patch
  losses (SSIM, LPIPS) in the lips stage.

    sampler = RaySampler(SubjectDataset(root, require=TRAIN_STEPS), ds.split("train"), n_rays=4096, seed=0)
    batch = sampler.sample()           # dict of numpy arrays + the frame index
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synctalk.data.contract import HEAD_LABELS, MOUTH_LABELS, PARSING_LABELS
from synctalk.data.subject import SubjectDataset

NOSE_TIP, CHIN = 1, 152          # MediaPipe mesh indices: the lower face runs from the nose tip to the chin
MOUTH_CENTRE = (13, 14)          # inner upper / lower lip
BOX_MARGIN = 0.25               # growth of the focus region's bounding box per side, for box_fraction rays
FOCUS_LABELS = {"head": HEAD_LABELS, "torso": (PARSING_LABELS["neck"], PARSING_LABELS["torso"])}


@dataclass
class RayBatch:
    frame: int
    pixels: np.ndarray        # [R, 2] int64 (column, row) pixel coordinates (centre at +0.5)
    target: np.ndarray        # [R, 3] float32 in [0, 1] (gt image: person over the background plate)
    behind: np.ndarray        # [R, 3] float32 in [0, 1]: what shows where the head is transparent
    head: np.ndarray          # [R] bool: head pixels (face, hair, ears, lips, eyes, brows)
    lower_face: np.ndarray    # [R] bool: head pixels between the nose tip and the chin
    mouth: np.ndarray         # [R] bool: lips and mouth interior
    torso: np.ndarray         # [R] bool: neck and torso pixels
    patch: int = 0            # P when the rays form a P x P patch (row-major), else 0


def lower_face_mask(labels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """`[H, W]` bool: head pixels from the nose tip's row down to the chin's row (+3% of the height)."""
    height = labels.shape[0]
    top = int(np.floor(landmarks[NOSE_TIP, 1]))
    bottom = int(np.ceil(landmarks[CHIN, 1] + 0.03 * height))
    rows = np.zeros(height, bool)
    rows[max(top, 0):max(min(bottom, height), 0)] = True
    return np.isin(labels, HEAD_LABELS) & rows[:, None]


class RaySampler:
    """Random ray batches from the frames `indices` of a subject (see module docstring)."""

    def __init__(self, ds: SubjectDataset, indices: list[int], n_rays: int, seed: int = 0,
                 head_fraction: float = 0.5, behind: str = "torso", patch: int = 0, mouth_patches: float = 0.5,
                 focus: str = "head", box_fraction: float = 0.0):
        if not indices:
            raise ValueError("RaySampler needs at least one frame index")
        if behind not in ("torso", "background"):
            raise ValueError(f"behind must be 'torso' or 'background', got '{behind}'")
        if focus not in FOCUS_LABELS:
            raise ValueError(f"focus must be one of {', '.join(FOCUS_LABELS)}, got '{focus}'")
        if head_fraction + box_fraction > 1:
            raise ValueError(f"head_fraction + box_fraction must be <= 1, got {head_fraction} + {box_fraction}")
        self.focus_labels = FOCUS_LABELS[focus]
        self.box_fraction = box_fraction
        self.ds, self.indices, self.n_rays = ds, np.asarray(indices), n_rays
        self.head_fraction, self.behind, self.patch, self.mouth_patches = head_fraction, behind, patch, mouth_patches
        self.rng = np.random.default_rng(seed)
        self._background = None

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def _behind_image(self, frame: int) -> np.ndarray:
        if self.behind == "torso":
            return self.ds.torso(frame)
        if self._background is None:
            from synctalk.io.images import read_image

            self._background = read_image(self.ds.root / "background.png")
        return self._background

    def sample(self, frame: int | None = None) -> RayBatch:
        ds, rng = self.ds, self.rng
        frame = int(rng.choice(self.indices)) if frame is None else int(frame)
        labels = ds.parsing(frame)
        height, width = labels.shape
        if self.patch:
            xs, ys = self._patch_pixels(frame, labels)
        else:
            xs, ys = self._random_pixels(labels)
        lower = lower_face_mask(labels, ds.landmarks[frame])[ys, xs]
        picked = labels[ys, xs]
        return RayBatch(
            frame=frame,
            pixels=np.stack([xs, ys], 1).astype(np.int64),
            target=ds.gt(frame)[ys, xs].astype(np.float32) / 255.0,
            behind=self._behind_image(frame)[ys, xs].astype(np.float32) / 255.0,
            head=np.isin(picked, HEAD_LABELS), lower_face=lower, mouth=np.isin(picked, MOUTH_LABELS),
            torso=np.isin(picked, (PARSING_LABELS["neck"], PARSING_LABELS["torso"])), patch=self.patch)

    def _random_pixels(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = labels.shape
        n_focus = int(round(self.n_rays * self.head_fraction))
        n_box = int(round(self.n_rays * self.box_fraction))
        focus_y, focus_x = np.nonzero(np.isin(labels, self.focus_labels))
        if len(focus_y) == 0:
            n_focus = n_box = 0
        pick = self.rng.integers(0, max(len(focus_y), 1), n_focus)
        xs, ys = [focus_x[pick]], [focus_y[pick]]
        if n_box:  # the region's bounding box grown by BOX_MARGIN per side: where halos and haze appear
            lo = np.array([focus_x.min(), focus_y.min()], float)
            hi = np.array([focus_x.max(), focus_y.max()], float) + 1
            grow = BOX_MARGIN * (hi - lo)
            lo, hi = np.maximum(lo - grow, 0), np.minimum(hi + grow, [width, height])
            xs.append(self.rng.integers(int(lo[0]), int(hi[0]), n_box))
            ys.append(self.rng.integers(int(lo[1]), int(hi[1]), n_box))
        n_any = self.n_rays - n_focus - n_box
        xs.append(self.rng.integers(0, width, n_any))
        ys.append(self.rng.integers(0, height, n_any))
        return np.concatenate(xs), np.concatenate(ys)

    def _patch_pixels(self, frame: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = labels.shape
        p = min(self.patch, height, width)
        if self.rng.random() < self.mouth_patches:
            centre = self.ds.landmarks[frame][list(MOUTH_CENTRE), :2].mean(0)
            centre = centre + self.rng.normal(0, p / 8, 2)
        else:
            head_y, head_x = np.nonzero(np.isin(labels, HEAD_LABELS))
            k = self.rng.integers(len(head_y)) if len(head_y) else None
            centre = np.array([head_x[k], head_y[k]]) if k is not None else np.array([width / 2, height / 2])
        x0 = int(np.clip(round(centre[0] - p / 2), 0, width - p))
        y0 = int(np.clip(round(centre[1] - p / 2), 0, height - p))
        ys, xs = np.mgrid[y0:y0 + p, x0:x0 + p]
        return xs.ravel(), ys.ravel()
