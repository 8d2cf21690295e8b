"""Training checkpoints: atomic files, keep the last K plus the best, exact resume (RNG states included).

    manager = CheckpointManager(workspace / "checkpoints", keep_last=3)
    manager.save(step, state, metric=val_psnr)        # ckpt_000500.pt (+ best.pt when the metric improved)
    state = manager.load_latest()                      # None when there is nothing to resume

A checkpoint is a dict; `capture_rng()` / `restore_rng()` put the python, numpy and torch (CPU and CUDA) random
states into it so that a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synctalk.errors import SyncTalkError
from synctalk.io.atomic import atomic_path, atomic_write_json

log = logging.getLogger("synctalk.train")

STAGES = ("head", "lips", "torso", "mouth", "portrait")   # a workspace's training stages, in order
_NAME = re.compile(r"^ckpt_(\d{7})\.pt$")


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save through an open file (so a full disk is an ENOSPC OSError, not torch's opaque RuntimeError),
    synced to the disk before the rename; a failed write leaves the previous file intact."""
    import os

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())


class CheckpointManager:
    """Numbered checkpoints in one folder; `best.pt` tracks the best `metric` (higher is better)."""

    def __init__(self, folder: str | Path, keep_last: int = 3):
        self.folder = Path(folder)
        self.keep_last = max(1, keep_last)

    def path(self, step: int) -> Path:
        return self.folder / f"ckpt_{step:07d}.pt"

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def _index(self) -> dict:
        index = self.folder / "index.json"
        return json.loads(index.read_text()) if index.is_file() else {}

    def save(self, step: int, state: dict[str, Any], metric: float | None = None) -> Path:
        """Write checkpoint `step` atomically, update best.pt when `metric` beats the best so far, and delete
        the oldest numbered checkpoints beyond `keep_last` (never the one best.pt was copied from)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(step)
        _save_atomic({**state, "step": step, "metric": metric}, path)
        index = self._index()
        if metric is not None and (index.get("best_metric") is None or metric > index["best_metric"]):
            _save_atomic({**state, "step": step, "metric": metric}, self.folder / "best.pt")
            index.update(best_step=step, best_metric=metric)
        index["latest_step"] = step
        atomic_write_json(self.folder / "index.json", index)
        for old in self.steps()[:-self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        return path

    def load(self, path: str | Path, map_location="cpu") -> dict[str, Any]:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise SyncTalkError(f"{path}: cannot read the checkpoint ({exc}); delete it to resume from the "
                                "previous one") from exc

    def load_latest(self, map_location="cpu") -> dict[str, Any] | None:
        """The newest readable numbered checkpoint, or None. An unreadable newest file is skipped with a
        warning (the one before it is used)."""
        for step in reversed(self.steps()):
            try:
                return self.load(self.path(step), map_location)
            except SyncTalkError as exc:
                log.warning("%s", exc)
        return None

    def load_best(self, map_location="cpu") -> dict[str, Any] | None:
        best = self.folder / "best.pt"
        return self.load(best, map_location) if best.is_file() else None
