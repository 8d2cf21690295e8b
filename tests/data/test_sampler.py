"""Ray sampler: targets and region flags match the subject's images at the sampled pixels; patches; resume; the
resident and streamed frame stores give the same batches; no host sync on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk.data import SubjectDataset
from synctalk.data.contract import HEAD_LABELS, MOUTH_LABELS, TORSO_LABELS, TRAIN_STEPS
from synctalk.data.sampler import (
    BOX_MARGIN,
    LIP_LANDMARKS,
    MOUTH_MARGIN,
    RaySampler,
    box_pixels,
    lower_face_mask,
    mask_box,
    region_pixels,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def host(batch):
    """The batch's tensors as numpy arrays."""
    return {name: getattr(batch, name).cpu().numpy() for name in
            ("frames", "pixels", "target", "behind", "head", "lower_face", "mouth", "torso", "frame_ids", "ray_rows")}


def check_pixels(ds, batch, behind="torso"):
    """Every per-ray field equals the subject's images and labels at the ray's frame and pixel."""
    b = host(batch)
    np.testing.assert_array_equal(b["frames"], b["frame_ids"][b["ray_rows"]])
    for frame in np.unique(b["frames"]):
        rows = b["frames"] == frame
        xs, ys = b["pixels"][rows, 0], b["pixels"][rows, 1]
        np.testing.assert_allclose(b["target"][rows], ds.gt(frame)[ys, xs] / 255.0, atol=1e-7)
        plate = ds.torso(frame) if behind == "torso" else read_background(ds)
        np.testing.assert_allclose(b["behind"][rows], plate[ys, xs] / 255.0, atol=1e-7)
        labels = ds.parsing(frame)[ys, xs]
        np.testing.assert_array_equal(b["head"][rows], np.isin(labels, HEAD_LABELS))
        np.testing.assert_array_equal(b["mouth"][rows], np.isin(labels, MOUTH_LABELS))
        np.testing.assert_array_equal(b["torso"][rows], np.isin(labels, TORSO_LABELS))
        np.testing.assert_array_equal(b["lower_face"][rows],
                                      lower_face_mask(ds.parsing(frame), ds.landmarks[frame])[ys, xs])


def read_background(ds):
    from synctalk.io.images import read_image

    return read_image(ds.root / "background.png")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "streamed"])
def test_random_rays_read_the_right_pixels(make_subject, device, resident):
    ds = SubjectDataset(make_subject(n_frames=6, size=(24, 32)), require=TRAIN_STEPS)
    sampler = RaySampler(ds, [1, 3], n_rays=200, seed=0, head_fraction=0.5, device=device, resident=resident)
    batch = sampler.sample()
    assert batch.frame in (1, 3) and batch.pixels.shape == (200, 2) and batch.patch == 0
    assert batch.target.device.type == device and batch.target.dtype == torch.float32
    check_pixels(ds, batch)
    assert batch.head[:100].all()  # the first half was drawn inside the head
    torso = RaySampler(ds, [0, 2, 4], n_rays=90, seed=3, behind="background", focus="torso", frames_per_batch=2,
                       box_fraction=0.3, device=device, resident=resident)
    batch = torso.sample()
    check_pixels(ds, batch, behind="background")
    first = host(batch)["frames"] == batch.frame_list[0]
    assert host(batch)["torso"][first][:int(first.sum() * 0.5)].all()  # the focus rays are torso rays
    sampler.close()
    torso.close()


def test_lower_face_rows():
    labels = np.ones((10, 4), np.uint8)
    landmarks = np.zeros((478, 3))
    landmarks[1, 1], landmarks[152, 1] = 3.2, 6.5  # nose tip row 3, chin row 6.5 (+0.3 margin → 7)
    mask = lower_face_mask(labels, landmarks)
    assert mask[:, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 3


def test_patches_and_resume(make_subject):
    ds = SubjectDataset(make_subject(n_frames=4, size=(24, 32)), require=TRAIN_STEPS)
    sampler = RaySampler(ds, [0, 1, 2, 3], n_rays=0, seed=5, patch=8, behind="background")
    sampler.sample()
    state = sampler.state()
    batch = sampler.sample()
    assert batch.pixels.shape == (64, 2) and batch.patch == 8
    grid = batch.pixels.reshape(8, 8, 2)
    assert (torch.diff(grid[..., 0], dim=1) == 1).all() and (torch.diff(grid[..., 1], dim=0) == 1).all()
    later = [sampler.sample() for _ in range(6)]   # past the batches drawn ahead
    # a new sampler (a resumed run) set to the saved state draws the same batches
    resumed = RaySampler(ds, [0, 1, 2, 3], n_rays=0, seed=99, patch=8, behind="background")
    resumed.set_state(state)
    for expected in [batch] + later:
        again = resumed.sample()
        assert again.frame_list == expected.frame_list
        torch.testing.assert_close(again.pixels, expected.pixels)
    with pytest.raises(ValueError, match="at least one frame"):
        RaySampler(ds, [], n_rays=10)
    two = RaySampler(ds, [0, 1, 2, 3], n_rays=0, seed=5, patch=8, frames_per_batch=2).sample()
    assert two.pixels.shape == (128, 2) and two.frames[:64].unique().numel() == two.frames[64:].unique().numel() == 1
    assert two.frames[0] != two.frames[64]
    check_pixels(ds, two)


def test_streamed_and_resident_stores_give_the_same_batches(make_subject):
    ds = SubjectDataset(make_subject(n_frames=8, size=(24, 32)), require=TRAIN_STEPS)
    kwargs = dict(n_rays=64, seed=2, frames_per_batch=3, box_fraction=0.2, mouth_fraction=0.2)
    resident = RaySampler(ds, list(range(8)), resident=True, **kwargs)
    streamed = RaySampler(ds, list(range(8)), budget_mb=0.0, lookahead=2, **kwargs)  # nothing fits: streamed
    assert resident.store.resident and not streamed.store.resident
    for _ in range(5):
        a, b = resident.sample(), streamed.sample()
        for name, value in host(a).items():
            np.testing.assert_array_equal(value, host(b)[name], err_msg=name)
        assert len(streamed.store._pending) <= streamed.store.lookahead + 1  # memory bounded by the lookahead
    streamed.close()


def test_region_pixels_are_uniform_inside_the_mask_and_anywhere_when_it_is_empty():
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True        # 6 pixels
    xs, ys = region_pixels(mask, 6000, generator)
    assert mask[0, ys[0], xs[0]].all()
    counts = np.bincount((ys[0] * 8 + xs[0]).numpy(), minlength=48)[mask[0].flatten().numpy()]
    assert counts.min() > 850 and counts.max() < 1150   # 1000 each expected
    assert len(np.unique((ys[1] * 8 + xs[1]).numpy())) == 48   # the empty mask: every pixel of the image


def test_box_rays_land_in_the_grown_head_box():
    labels = torch.zeros(1, 40, 40, dtype=torch.bool)
    labels[0, 10:20, 16:24] = True   # a 10 x 8 head
    lo, hi = mask_box(labels)
    assert lo.tolist() == [[16, 10]] and hi.tolist() == [[24, 20]]
    xs, ys = box_pixels(lo, hi, BOX_MARGIN, 2000, torch.tensor([40.0, 40.0]), torch.Generator().manual_seed(0))
    # grown by a quarter per side: rows 7.5..22.5 -> [7, 22), columns 14..26 -> [14, 26)
    assert ys.min() == 7 and ys.max() == 21 and xs.min() == 14 and xs.max() == 25
    empty_lo, empty_hi = mask_box(torch.zeros(1, 5, 7, dtype=torch.bool))
    assert empty_lo.tolist() == [[0, 0]] and empty_hi.tolist() == [[7, 5]]
    # a box past the image edge is clipped to it
    xs, ys = box_pixels(torch.tensor([[36.0, -4.0]]), torch.tensor([[48.0, 3.0]]), 0.5, 500, torch.tensor([40.0, 40.0]))
    assert xs.min() >= 30 and xs.max() == 39 and ys.min() == 0 and ys.max() <= 6


def test_rays_of_several_frames_read_each_frames_pixels(make_subject):
    ds = SubjectDataset(make_subject(n_frames=6, size=(24, 32)), require=TRAIN_STEPS)
    sampler = RaySampler(ds, [0, 2, 3, 5], n_rays=101, seed=1, frames_per_batch=3, mouth_fraction=0.2)
    batch = sampler.sample()
    frames, counts = np.unique(batch.frames.numpy(), return_counts=True)
    assert len(frames) == 3 and set(frames) <= {0, 2, 3, 5} and sorted(counts) == [33, 34, 34]
    assert sorted(batch.frame_list) == frames.tolist()
    check_pixels(ds, batch)
    with pytest.raises(ValueError, match="3 frames"):
        _ = batch.frame
    # more frames than the split has: every frame once
    assert len(np.unique(RaySampler(ds, [1, 4], n_rays=10, frames_per_batch=8).sample().frames)) == 2
    with pytest.raises(ValueError, match="frames_per_batch"):
        RaySampler(ds, [0], n_rays=8, frames_per_batch=0)
    with pytest.raises(ValueError, match="box_fraction"):
        RaySampler(ds, [0], n_rays=8, head_fraction=0.8, box_fraction=0.5)


def test_mouth_rays_land_around_the_lips(make_subject):
    ds = SubjectDataset(make_subject(n_frames=4, size=(60, 60)), require=TRAIN_STEPS)
    sampler = RaySampler(ds, [0, 1, 2, 3], n_rays=400, head_fraction=0.0, mouth_fraction=0.5, frames_per_batch=2)
    batch = sampler.sample()
    b = host(batch)
    for frame in batch.frame_list:
        rows = np.flatnonzero(b["frames"] == frame)[:100]   # the first half of the frame's rays
        lips = ds.landmarks[frame][list(LIP_LANDMARKS), :2]
        lo, hi = lips.min(0), lips.max(0) + 1
        grow = MOUTH_MARGIN * (hi - lo)
        lo, hi = np.maximum(lo - grow, 0), np.minimum(hi + grow, [60, 60])
        xs, ys = b["pixels"][rows, 0], b["pixels"][rows, 1]
        assert (xs >= np.floor(lo[0])).all() and (xs < np.ceil(hi[0])).all()
        assert (ys >= np.floor(lo[1])).all() and (ys < np.ceil(hi[1])).all()
    with pytest.raises(ValueError, match="mouth_fraction"):
        RaySampler(ds, [0], n_rays=8, head_fraction=0.6, mouth_fraction=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "streamed"])
def test_a_cuda_batch_makes_no_host_sync(make_subject, resident):
    ds = SubjectDataset(make_subject(n_frames=6, size=(24, 32)), require=TRAIN_STEPS)
    for kwargs in (dict(n_rays=101, frames_per_batch=3, box_fraction=0.2, mouth_fraction=0.2), dict(n_rays=0, patch=8)):
        sampler = RaySampler(ds, list(range(6)), seed=0, device="cuda", resident=resident, **kwargs)
        sampler.sample()   # the first batch allocates
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            batch = sampler.sample()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        check_pixels(ds, batch)
        sampler.close()
