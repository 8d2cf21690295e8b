"""Ray batches for training, streamed from a subject directory (memory bounded by the dataset's frame cache).

Each batch holds rays of one or more frames: per-ray frame indices, pixel coordinates, target colours, the colour
behind the head (the torso plate for the head stage, the background plate for the torso stage) and per-ray region
flags from the parsing map and landmarks. Two layouts:

- random rays from `frames_per_batch` distinct frames (an equal share each): `head_fraction` of them inside the
  focus region (the head, parsing HEAD_LABELS, or with `focus="torso"` the neck and torso), `box_fraction` in its
  bounding box grown by a quarter per side (the halo around the head, where a field leaves haze), `mouth_fraction`
  in the mouth's bounding box grown by half per side (lips, teeth and the chin that moves with them), the rest
  anywhere. Several frames per step show the audio and expression inputs more conditionings per step;
- square patches (`patch=P`), one per frame: P x P neighbouring pixels around the mouth (or a random head point),
  for patch losses (SSIM, LPIPS) in the lips stage.

    sampler = RaySampler(SubjectDataset(root, require=TRAIN_STEPS), ds.split("train"), n_rays=4096, seed=0)
    batch = sampler.sample()           # numpy arrays, batch.frames [R] the frame of each ray
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synctalk.data.contract import HEAD_LABELS, MOUTH_LABELS, TORSO_LABELS
from synctalk.data.subject import SubjectDataset

NOSE_TIP, CHIN = 1, 152          # MediaPipe mesh indices: the lower face runs from the nose tip to the chin
MOUTH_CENTRE = (13, 14)          # inner upper / lower lip
LIP_LANDMARKS = (0, 17, 61, 291)  # top of the upper lip, bottom of the lower lip, the two mouth corners
BOX_MARGIN = 0.25               # growth of the focus region's bounding box per side, for box_fraction rays
MOUTH_MARGIN = 0.5              # growth of the mouth's bounding box per side, for mouth_fraction rays
FOCUS_LABELS = {"head": HEAD_LABELS, "torso": TORSO_LABELS}


@dataclass
class RayBatch:
    frames: np.ndarray        # [R] int64 frame index of each ray
    pixels: np.ndarray        # [R, 2] int64 (column, row) pixel coordinates (centre at +0.5)
    target: np.ndarray        # [R, 3] float32 in [0, 1] (gt image: person over the background plate)
    behind: np.ndarray        # [R, 3] float32 in [0, 1]: what shows where the head is transparent
    head: np.ndarray          # [R] bool: head pixels (face, hair, ears, lips, eyes, brows)
    lower_face: np.ndarray    # [R] bool: head pixels between the nose tip and the chin
    mouth: np.ndarray         # [R] bool: lips and mouth interior
    torso: np.ndarray         # [R] bool: neck and torso pixels
    patch: int = 0            # P when the rays form P x P patches (one per frame, each row-major), else 0

    @property
    def frame(self) -> int:
        """The batch's frame, when all its rays come from one (patches, `frames_per_batch=1`)."""
        unique = np.unique(self.frames)
        if len(unique) != 1:
            raise ValueError(f"this batch holds rays of {len(unique)} frames; use batch.frames")
        return int(unique[0])


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
                 focus: str = "head", box_fraction: float = 0.0, mouth_fraction: float = 0.0,
                 frames_per_batch: int = 1):
        if not indices:
            raise ValueError("RaySampler needs at least one frame index")
        if behind not in ("torso", "background"):
            raise ValueError(f"behind must be 'torso' or 'background', got '{behind}'")
        if focus not in FOCUS_LABELS:
            raise ValueError(f"focus must be one of {', '.join(FOCUS_LABELS)}, got '{focus}'")
        if min(head_fraction, box_fraction, mouth_fraction) < 0 or head_fraction + box_fraction + mouth_fraction > 1:
            raise ValueError(f"head_fraction, box_fraction and mouth_fraction must be >= 0 with a sum <= 1, got "
                             f"{head_fraction} + {box_fraction} + {mouth_fraction}")
        if frames_per_batch < 1:
            raise ValueError(f"frames_per_batch must be >= 1, got {frames_per_batch}")
        self.focus_labels = FOCUS_LABELS[focus]
        self.box_fraction, self.mouth_fraction = box_fraction, mouth_fraction
        self.frames_per_batch = min(frames_per_batch, len(indices))
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
        """A batch of `frames_per_batch` distinct frames (`frame` forces one): an equal share of random rays from
        each, or one patch each (patches in frame order, each P x P row-major)."""
        if frame is not None:
            frames = [int(frame)]
        else:
            frames = [int(f) for f in self.rng.choice(self.indices, self.frames_per_batch, replace=False)]
        shares = np.diff(np.linspace(0, self.n_rays, len(frames) + 1).round().astype(int))
        parts = [self._frame_rays(f, int(n)) for f, n in zip(frames, shares, strict=True)]
        fields = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        return RayBatch(**fields, patch=self.patch)

    def _frame_rays(self, frame: int, n_rays: int) -> dict[str, np.ndarray]:
        ds = self.ds
        labels = ds.parsing(frame)
        if self.patch:
            xs, ys = self._patch_pixels(frame, labels)
        else:
            xs, ys = self._random_pixels(labels, n_rays, ds.landmarks[frame])
        picked = labels[ys, xs]
        return dict(
            frames=np.full(len(xs), frame, np.int64),
            pixels=np.stack([xs, ys], 1).astype(np.int64),
            target=ds.gt(frame)[ys, xs].astype(np.float32) / 255.0,
            behind=self._behind_image(frame)[ys, xs].astype(np.float32) / 255.0,
            head=np.isin(picked, HEAD_LABELS), lower_face=lower_face_mask(labels, ds.landmarks[frame])[ys, xs],
            mouth=np.isin(picked, MOUTH_LABELS), torso=np.isin(picked, TORSO_LABELS))

    def _box_pixels(self, region_x: np.ndarray, region_y: np.ndarray, margin: float, n: int, shape: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """`n` uniform pixels in the bounding box of a region grown by `margin` of its size per side."""
        height, width = shape
        lo = np.array([region_x.min(), region_y.min()], float)
        hi = np.array([region_x.max(), region_y.max()], float) + 1
        grow = margin * (hi - lo)
        lo, hi = np.maximum(lo - grow, 0), np.minimum(hi + grow, [width, height])
        return self.rng.integers(int(lo[0]), int(hi[0]), n), self.rng.integers(int(lo[1]), int(hi[1]), n)

    def _random_pixels(self, labels: np.ndarray, n_rays: int | None = None, landmarks: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        n_rays = self.n_rays if n_rays is None else n_rays
        n_focus = int(round(n_rays * self.head_fraction))
        n_box = int(round(n_rays * self.box_fraction))
        n_mouth = int(round(n_rays * self.mouth_fraction)) if landmarks is not None else 0
        focus_y, focus_x = np.nonzero(np.isin(labels, self.focus_labels))
        if len(focus_y) == 0:
            n_focus = n_box = 0
        pick = self.rng.integers(0, max(len(focus_y), 1), n_focus)
        xs, ys = [focus_x[pick]], [focus_y[pick]]
        if n_box:  # the region's bounding box, grown: where halos and haze appear
            box_x, box_y = self._box_pixels(focus_x, focus_y, BOX_MARGIN, n_box, labels.shape)
            xs.append(box_x)
            ys.append(box_y)
        if n_mouth:  # the lip landmarks' box, grown: the lips, teeth and the moving chin
            lips = landmarks[list(LIP_LANDMARKS), :2]
            mouth_x, mouth_y = self._box_pixels(lips[:, 0], lips[:, 1], MOUTH_MARGIN, n_mouth, labels.shape)
            xs.append(mouth_x)
            ys.append(mouth_y)
        n_any = n_rays - n_focus - n_box - n_mouth
        height, width = labels.shape
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
