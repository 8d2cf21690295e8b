"""Ray sampler: targets and region flags match the subject's images at the sampled pixels; patches; resume."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.data import SubjectDataset
from synctalk.data.contract import HEAD_LABELS
from synctalk.data.sampler import RaySampler, lower_face_mask


def test_random_rays_read_the_right_pixels(make_subject):
    ds = SubjectDataset(make_subject(n_frames=6, size=(24, 32)), require=("frames", "parsing", "background",
                                                                           "torso", "landmarks"))
    sampler = RaySampler(ds, [1, 3], n_rays=200, seed=0, head_fraction=0.5)
    batch = sampler.sample()
    assert batch.frame in (1, 3) and batch.pixels.shape == (200, 2) and batch.patch == 0
    xs, ys = batch.pixels[:, 0], batch.pixels[:, 1]
    np.testing.assert_allclose(batch.target, ds.gt(batch.frame)[ys, xs] / 255.0)
    np.testing.assert_allclose(batch.behind, ds.torso(batch.frame)[ys, xs] / 255.0)
    labels = ds.parsing(batch.frame)[ys, xs]
    np.testing.assert_array_equal(batch.head, np.isin(labels, HEAD_LABELS))
    assert batch.head[:100].all()  # the first half was drawn inside the head
    np.testing.assert_array_equal(batch.lower_face,
                                  lower_face_mask(ds.parsing(batch.frame), ds.landmarks[batch.frame])[ys, xs])


def test_lower_face_rows():
    labels = np.ones((10, 4), np.uint8)
    landmarks = np.zeros((478, 3))
    landmarks[1, 1], landmarks[152, 1] = 3.2, 6.5  # nose tip row 3, chin row 6.5 (+0.3 margin → 7)
    mask = lower_face_mask(labels, landmarks)
    assert mask[:, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 3


def test_patches_and_resume(make_subject):
    ds = SubjectDataset(make_subject(n_frames=4, size=(24, 32)), require=("frames", "parsing", "background",
                                                                           "torso", "landmarks"))
    sampler = RaySampler(ds, [0, 1, 2, 3], n_rays=0, seed=5, patch=8, behind="background")
    state = sampler.state()
    batch = sampler.sample()
    assert batch.pixels.shape == (64, 2) and batch.patch == 8
    grid = batch.pixels.reshape(8, 8, 2)
    assert (np.diff(grid[..., 0], axis=1) == 1).all() and (np.diff(grid[..., 1], axis=0) == 1).all()
    sampler.set_state(state)
    again = sampler.sample()
    np.testing.assert_array_equal(again.pixels, batch.pixels)
    with pytest.raises(ValueError, match="at least one frame"):
        RaySampler(ds, [], n_rays=10)


def test_box_rays_land_in_the_grown_head_box(make_subject):
    from synctalk.data.contract import TRAIN_STEPS

    ds = SubjectDataset(make_subject(n_frames=4, size=(40, 40)), require=TRAIN_STEPS)
    labels = np.zeros((40, 40), np.uint8)
    labels[10:20, 16:24] = 1   # a 10 x 8 head
    sampler = RaySampler(ds, [0], n_rays=400, head_fraction=0.25, box_fraction=0.5)
    xs, ys = sampler._random_pixels(labels)
    head, box = slice(0, 100), slice(100, 300)
    assert np.all(labels[ys[head], xs[head]] == 1)
    # grown by a quarter per side: rows 7.5..22.5 -> [7, 22], columns 14..26 -> [14, 25]
    assert ys[box].min() >= 7 and ys[box].max() <= 22 and xs[box].min() >= 14 and xs[box].max() <= 25
    assert ys[box].min() < 10 and ys[box].max() >= 20   # beyond the head itself
    with pytest.raises(ValueError, match="box_fraction"):
        RaySampler(ds, [0], n_rays=8, head_fraction=0.8, box_fraction=0.5)
