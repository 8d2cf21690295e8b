"""Checkpoints: rotation, best tracking, exact RNG resume, unreadable files."""

from __future__ import annotations

import random

import numpy as np
import torch

from synctalk.train.checkpoint import CheckpointManager, capture_rng, restore_rng


def test_keeps_last_k_and_best(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step, metric in ((100, 20.0), (200, 25.0), (300, 22.0), (400, 21.0)):
        manager.save(step, {"weights": torch.full((2,), float(step))}, metric=metric)
    assert manager.steps() == [300, 400]
    best = manager.load_best()
    assert best["step"] == 200 and best["metric"] == 25.0 and best["weights"][0] == 200
    assert manager.load_latest()["step"] == 400


def test_unreadable_latest_falls_back_to_the_previous(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save(1, {"x": 1})
    manager.save(2, {"x": 2})
    manager.path(2).write_bytes(b"truncated")
    assert manager.load_latest()["x"] == 1
    assert CheckpointManager(tmp_path / "none").load_latest() is None


def test_rng_round_trip():
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
