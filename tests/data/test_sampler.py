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
    two = RaySampler(ds, [0, 1, 2, 3], n_rays=0, seed=5, patch=8, frames_per_batch=2).sample()
    assert two.pixels.shape == (128, 2) and len(set(two.frames[:64])) == len(set(two.frames[64:])) == 1
    assert two.frames[0] != two.frames[64]


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


def test_rays_of_several_frames_read_each_frames_pixels(make_subject):
    from synctalk.data.contract import TRAIN_STEPS

    ds = SubjectDataset(make_subject(n_frames=6, size=(24, 32)), require=TRAIN_STEPS)
    sampler = RaySampler(ds, [0, 2, 3, 5], n_rays=101, seed=1, frames_per_batch=3, mouth_fraction=0.2)
    batch = sampler.sample()
    frames, counts = np.unique(batch.frames, return_counts=True)
    assert len(frames) == 3 and set(frames) <= {0, 2, 3, 5} and sorted(counts) == [33, 34, 34]
    for frame in frames:
        rows = batch.frames == frame
        xs, ys = batch.pixels[rows, 0], batch.pixels[rows, 1]
        np.testing.assert_allclose(batch.target[rows], ds.gt(frame)[ys, xs] / 255.0)
        np.testing.assert_allclose(batch.behind[rows], ds.torso(frame)[ys, xs] / 255.0)
    with pytest.raises(ValueError, match="3 frames"):
        _ = batch.frame
    # more frames than the split has: every frame once
    assert len(np.unique(RaySampler(ds, [1, 4], n_rays=10, frames_per_batch=8).sample().frames)) == 2
    with pytest.raises(ValueError, match="frames_per_batch"):
        RaySampler(ds, [0], n_rays=8, frames_per_batch=0)


def test_mouth_rays_land_around_the_lips(make_subject):
    from synctalk.data.contract import TRAIN_STEPS
    from synctalk.data.sampler import LIP_LANDMARKS

    ds = SubjectDataset(make_subject(n_frames=4, size=(60, 60)), require=TRAIN_STEPS)
    landmarks = np.full((478, 3), 5.0)
    landmarks[list(LIP_LANDMARKS), :2] = [[30, 38], [30, 46], [24, 42], [36, 42]]  # a 13 x 9 mouth box
    labels = np.zeros((60, 60), np.uint8)
    sampler = RaySampler(ds, [0], n_rays=400, head_fraction=0.0, mouth_fraction=0.5)
    xs, ys = sampler._random_pixels(labels, landmarks=landmarks)
    mouth = slice(0, 200)
    # the box 24..37 x 38..47 grown by half per side: columns [17.5, 43.5), rows [33.5, 51.5)
    assert xs[mouth].min() >= 17 and xs[mouth].max() <= 43 and ys[mouth].min() >= 33 and ys[mouth].max() <= 51
    assert xs[mouth].min() < 24 and ys[mouth].max() > 47   # beyond the lips themselves
    with pytest.raises(ValueError, match="mouth_fraction"):
        RaySampler(ds, [0], n_rays=8, head_fraction=0.6, mouth_fraction=0.5)
