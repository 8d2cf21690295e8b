"""The training frames as uint8 tensors on the device: every frame resident, or a window of upcoming frames.

A training step reads a few frames (ground truth, what shows behind the head, the parsing labels). Decoding them
from JPEG/PNG on the step's thread and copying them unpinned would keep a GPU waiting, so :class:`FrameStore`
serves them from one of two places:

- **resident** (when every frame fits ``budget_mb``): the frames are decoded once and kept as uint8 tensors on the
  device (GPU memory, or RAM on CPU); a step only gathers pixels from them.
- **streamed** (longer clips): a worker thread decodes the frames of the next ``lookahead`` batches while the
  device works on the current one, into pinned host memory on CUDA, and the step copies them asynchronously. Memory
  stays bounded by ``lookahead`` batches, whatever the clip's length.

Both give the same :class:`FrameViews`, so the pixel sampler (synctalk.data.sampler) does not know which it got.

    store = FrameStore(ds, ds.split("train"), device, behind="torso", budget_mb=2048)
    store.prefetch([[3, 9], [4, 1]])    # the batches coming next (streamed mode starts decoding them)
    views = store.fetch([3, 9])         # views.gt[views.slots] are frames 3 and 9, [2, H, W, 3] uint8
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from synctalk.data.subject import SubjectDataset

log = logging.getLogger("synctalk.data")

BEHIND = ("torso", "background")


@dataclass
class FrameViews:
    """Frames of one batch on the device. ``gt[slots[i]]`` is the batch's i-th frame."""

    gt: Tensor        # [S, H, W, 3] uint8: frame with the background plate behind the person
    behind: Tensor    # [S, H, W, 3] or [1, H, W, 3] (one background plate for all) uint8
    labels: Tensor    # [S, H, W] uint8 parsing labels
    slots: Tensor     # [F] int64 rows of gt / labels holding the batch's frames, in batch order
    behind_slots: Tensor  # [F] int64 rows of behind (zeros when one plate serves every frame)


def to_device(array: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """A host array on `device` without making the host wait: through pinned memory on CUDA (a pageable copy
    would synchronise the stream)."""
    tensor = torch.as_tensor(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def frame_bytes(ds: SubjectDataset, behind: str) -> int:
    """uint8 bytes one frame takes in a FrameStore (gt + labels, + its torso plate when behind='torso')."""
    pixels = ds.height * ds.width
    return pixels * (3 + 1 + (3 if behind == "torso" else 0))


class FrameStore:
    """uint8 frames of ``frames`` on ``device``, resident when they fit ``budget_mb``, else streamed (see module
    docstring). ``resident`` forces either mode (tests, benchmarks)."""

    def __init__(self, ds: SubjectDataset, frames: list[int], device: str | torch.device = "cpu",
                 behind: str = "torso", budget_mb: float = 2048.0, lookahead: int = 4, resident: bool | None = None):
        if behind not in BEHIND:
            raise ValueError(f"behind must be one of {', '.join(BEHIND)}, got '{behind}'")
        if not frames:
            raise ValueError("FrameStore needs at least one frame")
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self.ds, self.frames, self.behind = ds, [int(f) for f in frames], behind
        self.device = torch.device(device)
        self.lookahead = lookahead
        total_mb = frame_bytes(ds, behind) * len(self.frames) / 2**20
        self.resident = total_mb <= budget_mb if resident is None else resident
        self._background = None
        if behind == "background":
            from synctalk.io.images import read_image

            self._background = to_device(read_image(ds.root / "background.png"), self.device)[None]
        if self.resident:
            self._load_all(total_mb)
        else:
            log.info("training frames: %.0f MB > data.preload_mb=%.0f, streaming them (%d batches ahead)",
                     total_mb, budget_mb, lookahead)
            # the worker reads through its own dataset view: the LRU cache of `ds` is not thread-safe
            self._reader = SubjectDataset(ds.root, require=(), cache_frames=0)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="synctalk-frames")
            self._pending: OrderedDict[tuple[int, ...], Future] = OrderedDict()

    # ---------------------------------------------------------------------------------------------- resident
    def _load_all(self, total_mb: float) -> None:
        ds, n = self.ds, len(self.frames)
        shape = (n, ds.height, ds.width)
        log.info("training frames: %d frames, %.0f MB on %s", n, total_mb, self.device)
        gt = np.empty(shape + (3,), np.uint8)
        labels = np.empty(shape, np.uint8)
        torso = np.empty(shape + (3,), np.uint8) if self.behind == "torso" else None
        for row, frame in enumerate(self.frames):
            gt[row], labels[row] = ds.gt(frame), ds.parsing(frame)
            if torso is not None:
                torso[row] = ds.torso(frame)
        self._row = {frame: row for row, frame in enumerate(self.frames)}
        self._gt, self._labels = torch.from_numpy(gt).to(self.device), torch.from_numpy(labels).to(self.device)
        self._torso = torch.from_numpy(torso).to(self.device) if torso is not None else None

    # ---------------------------------------------------------------------------------------------- streamed
    def _decode(self, frames: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Worker thread: the batch's images as (pinned on CUDA) host tensors."""
        reader = self._reader
        gt = torch.from_numpy(np.stack([reader.gt(f) for f in frames]))
        labels = torch.from_numpy(np.stack([reader.parsing(f) for f in frames]))
        torso = torch.from_numpy(np.stack([reader.torso(f) for f in frames])) if self.behind == "torso" else None
        if self.device.type == "cuda":
            gt, labels = gt.pin_memory(), labels.pin_memory()
            torso = torso.pin_memory() if torso is not None else None
        return gt, labels, torso

    def prefetch(self, batches: list[list[int]]) -> None:
        """The batches that come next: a streamed store starts decoding them (up to ``lookahead``)."""
        if self.resident:
            return
        for frames in batches[:self.lookahead]:
            key = tuple(int(f) for f in frames)
            if key not in self._pending:
                self._pending[key] = self._pool.submit(self._decode, key)
        while len(self._pending) > self.lookahead + 1:   # batches that will not come (after a resume)
            self._pending.popitem(last=False)[1].cancel()

    def fetch(self, frames: list[int]) -> FrameViews:
        """The batch's frames (distinct training frames) on the device."""
        key = tuple(int(f) for f in frames)
        if self.resident:
            try:
                rows = [self._row[f] for f in key]
            except KeyError as exc:
                raise ValueError(f"frame {exc.args[0]} is not one of this store's frames") from None
            slots = to_device(np.asarray(rows, np.int64), self.device)
            behind = self._torso if self._torso is not None else self._background
            return FrameViews(self._gt, behind, self._labels, slots,
                              slots if self._torso is not None else torch.zeros_like(slots))
        future = self._pending.pop(key, None) or self._pool.submit(self._decode, key)
        gt, labels, torso = future.result()
        device, blocking = self.device, self.device.type != "cuda"
        slots = torch.arange(len(key), device=device)
        behind = torso.to(device, non_blocking=not blocking) if torso is not None else self._background
        return FrameViews(gt.to(device, non_blocking=not blocking), behind,
                          labels.to(device, non_blocking=not blocking), slots,
                          slots if torso is not None else torch.zeros_like(slots))

    def close(self) -> None:
        if not self.resident:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
