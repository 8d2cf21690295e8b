"""Ray batches for training, drawn on the device from the frames of a :class:`~synctalk.data.frames.FrameStore`.

Each batch holds rays of one or more frames: per-ray frame indices, pixel coordinates, target colours, the colour
behind the head (the torso plate for the head stage, the background plate for the torso stage) and per-ray region
flags from the parsing map and landmarks. Two layouts:

- random rays from `frames_per_batch` distinct frames (an equal share each): `head_fraction` of them inside the
  focus region (the head, parsing HEAD_LABELS, or with `focus="torso"` the neck and torso), `box_fraction` in its
  bounding box grown by a quarter per side (the halo around the head, where a field leaves haze), `mouth_fraction`
  in the mouth's bounding box grown by half per side (lips, teeth and the chin that moves with them), the rest
  anywhere. A frame without any focus pixel draws those rays anywhere. Several frames per step show the audio and
  expression inputs more conditionings per step;
- square patches (`patch=P`), one per frame: P x P neighbouring pixels around the mouth (or a random head point),
  for patch losses (SSIM, LPIPS) in the lips stage.

The frames of each batch are drawn on the host (a numpy generator, a few batches ahead so that a streamed store can
decode them in time); the pixels on the device (a torch generator), with no host synchronisation: regions are drawn
with ``torch.multinomial`` over the region's mask and boxes are found with reductions, never ``nonzero``.

    sampler = RaySampler(SubjectDataset(root, require=TRAIN_STEPS), ds.split("train"), n_rays=4096, seed=0,
                         device="cuda")
    batch = sampler.sample()           # tensors on the device; batch.frames [R], batch.frame_ids [F]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from synctalk.data.contract import HEAD_LABELS, MAX_LABEL, MOUTH_LABELS, TORSO_LABELS
from synctalk.data.frames import FrameStore, to_device
from synctalk.data.subject import SubjectDataset

NOSE_TIP, CHIN = 1, 152          # MediaPipe mesh indices: the lower face runs from the nose tip to the chin
MOUTH_CENTRE = (13, 14)          # inner upper / lower lip
LIP_LANDMARKS = (0, 17, 61, 291)  # top of the upper lip, bottom of the lower lip, the two mouth corners
BOX_MARGIN = 0.25               # growth of the focus region's bounding box per side, for box_fraction rays
MOUTH_MARGIN = 0.5              # growth of the mouth's bounding box per side, for mouth_fraction rays
LOWER_FACE_MARGIN = 0.03        # the lower face reaches this fraction of the height below the chin landmark
FOCUS_LABELS = {"head": HEAD_LABELS, "torso": TORSO_LABELS}
# the landmarks a batch needs, in this order: nose tip, chin, inner lips, lip box
_POINTS = (NOSE_TIP, CHIN, *MOUTH_CENTRE, *LIP_LANDMARKS)
# bit flags per parsing label
_HEAD, _MOUTH, _TORSO, _FOCUS = 1, 2, 4, 8


@dataclass
class RayBatch:
    frames: Tensor        # [R] int64 frame index of each ray
    pixels: Tensor        # [R, 2] int64 (column, row) pixel coordinates (centre at +0.5)
    target: Tensor        # [R, 3] float32 in [0, 1] (gt image: person over the background plate)
    behind: Tensor        # [R, 3] float32 in [0, 1]: what shows where the head is transparent
    head: Tensor          # [R] bool: head pixels (face, hair, ears, lips, eyes, brows)
    lower_face: Tensor    # [R] bool: head pixels between the nose tip and the chin
    mouth: Tensor         # [R] bool: lips and mouth interior
    torso: Tensor         # [R] bool: neck and torso pixels
    frame_ids: Tensor     # [F] int64 the batch's distinct frames, in draw order
    ray_rows: Tensor      # [R] int64 each ray's row in frame_ids
    frame_list: tuple[int, ...] = ()  # frame_ids as host ints (known without reading the device)
    patch: int = 0        # P when the rays form P x P patches (one per frame, each row-major), else 0

    @property
    def frame(self) -> int:
        """The batch's frame, when all its rays come from one (patches, `frames_per_batch=1`)."""
        if len(self.frame_list) != 1:
            raise ValueError(f"this batch holds rays of {len(self.frame_list)} frames; use batch.frames")
        return self.frame_list[0]


def lower_face_mask(labels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """`[H, W]` bool: head pixels from the nose tip's row down to the chin's row (+3% of the height). The host
    reference of the sampler's per-ray ``lower_face`` flag."""
    height = labels.shape[0]
    top = int(np.floor(landmarks[NOSE_TIP, 1]))
    bottom = int(np.ceil(landmarks[CHIN, 1] + LOWER_FACE_MARGIN * height))
    rows = np.zeros(height, bool)
    rows[max(top, 0):max(min(bottom, height), 0)] = True
    return np.isin(labels, HEAD_LABELS) & rows[:, None]


def label_flags(focus_labels: tuple[int, ...], device) -> Tensor:
    """[256] uint8 bit flags per label value (_HEAD, _MOUTH, _TORSO, _FOCUS)."""
    flags = torch.zeros(256, dtype=torch.uint8)
    for labels, bit in ((HEAD_LABELS, _HEAD), (MOUTH_LABELS, _MOUTH), (TORSO_LABELS, _TORSO),
                        (focus_labels, _FOCUS)):
        flags[list(labels)] |= bit
    return flags.to(device)


def region_pixels(mask: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """`n` uniform pixels (x, y) [F, n] inside each frame's `mask` [F, H, W]; anywhere in a frame whose mask is
    empty. No host synchronisation (multinomial with replacement)."""
    frames, height, width = mask.shape
    # every pixel keeps a weight of 1e-9 of a mask pixel: an empty mask becomes uniform instead of an error, and a
    # mask of k pixels leaks at most H*W/k * 1e-9 of its draws outside
    weights = mask.reshape(frames, -1).float().add_(1e-9)
    index = torch.multinomial(weights, n, replacement=True, generator=generator)
    return index % width, torch.div(index, width, rounding_mode="floor")


def mask_box(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Bounding box of each frame's mask [F, H, W] as float (lo, hi) [F, 2] in (x, y), hi exclusive; the whole
    image for an empty mask. Reductions only (no nonzero)."""
    frames, height, width = mask.shape
    device = mask.device

    def extent(any_line: Tensor, size: int) -> tuple[Tensor, Tensor]:
        positions = torch.arange(size, device=device)
        first = torch.where(any_line, positions, size).amin(1)
        last = torch.where(any_line, positions, -1).amax(1) + 1
        empty = last <= 0
        return torch.where(empty, 0, first), torch.where(empty, size, last)

    x0, x1 = extent(mask.any(1), width)
    y0, y1 = extent(mask.any(2), height)
    return torch.stack([x0, y0], 1).float(), torch.stack([x1, y1], 1).float()


def box_pixels(lo: Tensor, hi: Tensor, margin: float, n: int, limit: Tensor,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """`n` uniform integer pixels (x, y) [F, n] per frame in the box [lo, hi) [F, 2] grown by `margin` of its size
    per side and clipped to the image, `limit` = [width, height] (a device tensor: no host copy per call)."""
    grow = margin * (hi - lo)
    start = (lo - grow).clamp(min=0).floor()
    stop = torch.minimum((hi + grow).floor(), limit)
    start = torch.minimum(start, limit - 1)
    stop = torch.maximum(stop, start + 1)
    u = torch.rand(lo.shape[0], n, 2, device=lo.device, generator=generator)
    picked = (start[:, None] + u * (stop - start)[:, None]).floor().long()
    picked = torch.minimum(picked, (stop[:, None] - 1).long())
    return picked[..., 0], picked[..., 1]


class RaySampler:
    """Random ray batches from the frames `indices` of a subject, as tensors on `device` (see module docstring).

    Args (beyond the layouts above):
        budget_mb: frames are kept resident on the device when they fit (synctalk.data.frames), else streamed.
        lookahead: batches drawn ahead (a streamed store decodes them while the device works).
        resident: force the store's mode (None: by `budget_mb`).
    """

    def __init__(self, ds: SubjectDataset, indices: list[int], n_rays: int, seed: int = 0,
                 head_fraction: float = 0.5, behind: str = "torso", patch: int = 0, mouth_patches: float = 0.5,
                 focus: str = "head", box_fraction: float = 0.0, mouth_fraction: float = 0.0,
                 frames_per_batch: int = 1, device: str | torch.device = "cpu", budget_mb: float = 2048.0,
                 lookahead: int = 4, resident: bool | None = None):
        if len(indices) == 0:
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
        if patch < 0 or (not patch and n_rays < 1):
            raise ValueError(f"need n_rays >= 1 or patch > 0, got n_rays={n_rays}, patch={patch}")
        self.ds, self.indices, self.n_rays = ds, np.asarray(indices, np.int64), n_rays
        self.head_fraction, self.box_fraction, self.mouth_fraction = head_fraction, box_fraction, mouth_fraction
        self.behind, self.patch, self.mouth_patches = behind, patch, mouth_patches
        self.frames_per_batch = min(frames_per_batch, len(indices))
        self.device = torch.device(device)
        self.store = FrameStore(ds, self.indices.tolist(), self.device, behind, budget_mb, lookahead, resident)
        self.flags = label_flags(FOCUS_LABELS[focus], self.device)
        self.points = torch.as_tensor(np.asarray(ds.landmarks)[:, list(_POINTS), :2], dtype=torch.float32,
                                      device=self.device)
        self.limit = torch.tensor([float(ds.width), float(ds.height)], device=self.device)  # once, not per step
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)
        self.lookahead = lookahead
        self._ahead: deque[tuple[dict, list[int]]] = deque()   # (frame rng state before the draw, frames)
        self._keep: dict[int, Tensor] = {}                       # rays kept of [F, share] when shares differ

    # ----------------------------------------------------------------------------------------------- state
    def state(self) -> dict:
        """Everything that decides the next batches (for exact resume)."""
        frames = self._ahead[0][0] if self._ahead else self.rng.bit_generator.state
        return {"frames": frames, "pixels": self.generator.get_state()}

    def set_state(self, state: dict) -> None:
        if "pixels" in state:
            self.rng.bit_generator.state = state["frames"]
            self.generator.set_state(state["pixels"])
        else:  # a checkpoint from before device draws: its frame generator goes on, the pixel draws restart
            self.rng.bit_generator.state = state
        self._ahead.clear()

    def _draw_frames(self) -> None:
        while len(self._ahead) < self.lookahead:
            before = self.rng.bit_generator.state
            chosen = self.rng.choice(self.indices, self.frames_per_batch, replace=False)
            self._ahead.append((before, [int(f) for f in chosen]))
        self.store.prefetch([frames for _, frames in self._ahead])

    # ----------------------------------------------------------------------------------------------- batches
    def sample(self, frame: int | None = None) -> RayBatch:
        """A batch of `frames_per_batch` distinct frames (`frame` forces one): an equal share of random rays from
        each, or one patch each (patches in frame order, each P x P row-major)."""
        if frame is not None:
            frames = [int(frame)]
        else:
            self._draw_frames()
            frames = self._ahead.popleft()[1]
            self._draw_frames()
        views = self.store.fetch(frames)
        frame_ids = to_device(np.asarray(frames, np.int64), self.device)
        labels = views.labels[views.slots]                      # [F, H, W]
        points = self.points[frame_ids]                         # [F, 8, 2]
        if self.patch:
            xs, ys = self._patch_pixels(labels, points)
        else:
            xs, ys = self._random_pixels(labels, points)
        count = xs.shape[1]
        rows = torch.arange(len(frames), device=self.device)[:, None].expand(-1, count).reshape(-1)  # no sync
        xs, ys = xs.reshape(-1), ys.reshape(-1)
        if not self.patch and count * len(frames) != self.n_rays:
            keep = self._kept_rays(len(frames), count)
            xs, ys, rows = xs[keep], ys[keep], rows[keep]
        slots, behind_slots = views.slots[rows], views.behind_slots[rows]
        picked = views.labels[slots, ys, xs].long()
        flags = self.flags[picked]
        nose_row = points[rows, 0, 1].floor()
        chin_row = (points[rows, 1, 1] + LOWER_FACE_MARGIN * self.ds.height).ceil()
        lower_face = (flags & _HEAD).bool() & (ys >= nose_row) & (ys < chin_row)
        return RayBatch(
            frames=frame_ids[rows], pixels=torch.stack([xs, ys], 1),
            target=views.gt[slots, ys, xs].float() / 255.0,
            behind=views.behind[behind_slots, ys, xs].float() / 255.0,
            head=(flags & _HEAD).bool(), lower_face=lower_face, mouth=(flags & _MOUTH).bool(),
            torso=(flags & _TORSO).bool(), frame_ids=frame_ids, ray_rows=rows, frame_list=tuple(frames),
            patch=self.patch)

    def _kept_rays(self, n_frames: int, count: int) -> Tensor:
        """Flat indices into [n_frames, count] that give each frame its share of n_rays (shares differ by at most
        one; a frame's extra rays are the last of its 'anywhere' rays)."""
        if n_frames not in self._keep:
            shares = np.diff(np.linspace(0, self.n_rays, n_frames + 1).round().astype(int))
            keep = np.concatenate([row * count + np.arange(share) for row, share in enumerate(shares)])
            self._keep[n_frames] = torch.as_tensor(keep, device=self.device)
        return self._keep[n_frames]

    def _random_pixels(self, labels: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """(x, y) [F, share]: per frame its focus, box, mouth and anywhere rays, in that order."""
        n_frames = labels.shape[0]
        share = -(-self.n_rays // n_frames)
        counts = [int(round(share * f)) for f in (self.head_fraction, self.box_fraction, self.mouth_fraction)]
        n_focus, n_box, n_mouth = counts
        xs, ys = [], []
        focus = (self.flags[labels.long()] & _FOCUS).bool() if n_focus or n_box else None
        if n_focus:
            x, y = region_pixels(focus, n_focus, self.generator)
            xs.append(x)
            ys.append(y)
        if n_box:  # the region's bounding box, grown: where halos and haze appear
            lo, hi = mask_box(focus)
            x, y = box_pixels(lo, hi, BOX_MARGIN, n_box, self.limit, self.generator)
            xs.append(x)
            ys.append(y)
        if n_mouth:  # the lip landmarks' box, grown: the lips, teeth and the moving chin
            lips = points[:, 4:]
            x, y = box_pixels(lips.amin(1), lips.amax(1) + 1, MOUTH_MARGIN, n_mouth, self.limit, self.generator)
            xs.append(x)
            ys.append(y)
        n_any = share - n_focus - n_box - n_mouth
        if n_any > 0:
            image = self.limit.expand(n_frames, 2)
            x, y = box_pixels(torch.zeros_like(image), image, 0.0, n_any, self.limit, self.generator)
            xs.append(x)
            ys.append(y)
        return torch.cat(xs, 1), torch.cat(ys, 1)

    def _patch_pixels(self, labels: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """(x, y) [F, P*P]: per frame a P x P patch (row-major) centred on the mouth (with `mouth_patches`
        probability, jittered by P/8) or on a random head pixel."""
        n_frames, height, width = labels.shape
        p = min(self.patch, height, width)
        gen, device = self.generator, self.device
        mouth = points[:, 2:4].mean(1) + torch.randn(n_frames, 2, device=device, generator=gen) * (p / 8)
        head = (self.flags[labels.long()] & _HEAD).bool()
        hx, hy = region_pixels(head, 1, gen)
        on_head = torch.cat([hx, hy], 1).float()
        pick_mouth = torch.rand(n_frames, 1, device=device, generator=gen) < self.mouth_patches
        centre = torch.where(pick_mouth, mouth, on_head)
        corner = torch.minimum((centre - p / 2).round().clamp(min=0), self.limit - p).long()
        dy, dx = torch.meshgrid(torch.arange(p, device=device), torch.arange(p, device=device), indexing="ij")
        return corner[:, :1] + dx.reshape(1, -1), corner[:, 1:] + dy.reshape(1, -1)

    def close(self) -> None:
        self.store.close()


assert MAX_LABEL < 256  # label_flags indexes a 256-entry table with uint8 labels
