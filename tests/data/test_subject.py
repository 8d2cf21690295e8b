"""Subject dataset contract: a valid subject loads; each kind of breakage gives a clear error."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from synctalk.data import TRAIN_STEPS, FrameCache, SubjectDataset, SubjectWriter
from synctalk.errors import DatasetError
from synctalk.io.images import write_image
from synctalk.io.media import write_wav


def test_complete_subject_loads(make_subject):
    root = make_subject(n_frames=12, size=(24, 32))
    ds = SubjectDataset(root, require=TRAIN_STEPS)
    assert (len(ds), ds.height, ds.width, ds.fps) == (12, 24, 32, 25.0)
    assert ds.steps == TRAIN_STEPS
    assert ds.image(3).shape == (24, 32, 3) and ds.parsing(3).shape == (24, 32)
    assert ds.landmarks.shape == (12, 478, 3) and ds.blendshapes.shape == (12, 52)
    assert ds.poses.shape == (12, 4, 4) and ds.intrinsics[0, 2] == 16.0
    assert ds.split("val") == [10, 11] and len(ds.audio()) == int(12 / 25 * 16000)
    assert ds.audio_features.shape == (12, 16, 8)
    assert "12 frames" in repr(ds)


def test_images_are_read_only_and_cached(make_subject):
    ds = SubjectDataset(make_subject(), cache_frames=4)
    first = ds.image(0)
    assert ds.image(0) is first
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1


def test_memory_does_not_grow_with_video_length(make_subject):
    ds = SubjectDataset(make_subject(n_frames=240, size=(64, 64), steps=("frames",)), cache_frames=8)
    frame_bytes = 64 * 64 * 3

    def peak_reading(n: int) -> int:
        ds._caches["frames"]._items.clear()
        tracemalloc.start()
        for i in range(n):
            ds.image(i)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short, long = peak_reading(40), peak_reading(240)
    assert ds.cached_frames() == 8
    assert long < short + 4 * frame_bytes          # 6x more frames, same peak (within a few frames' noise)
    assert long < 30 * frame_bytes                 # bounded by the cache, not by the 240 frames


def test_lru_eviction_order():
    cache = FrameCache(2)
    loads = []

    def loader(key):
        return lambda: loads.append(key) or np.array([key])

    for key in (1, 2, 1, 3, 1, 2):
        cache.get(key, loader(key))
    assert loads == [1, 2, 3, 2]  # 1 stayed (recently used), 2 was evicted by 3 then reloaded


def _meta(root):
    return json.loads((root / "meta.json").read_text())


def _set_meta(root, **values):
    meta = _meta(root)
    meta.update(values)
    (root / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "frames" / "000005.jpg").unlink(), "11 frame images but meta.json says n_frames=12; first "
                                                       "missing: 000005"),
    (lambda r: write_image(r / "frames" / "000012.jpg", np.zeros((24, 32, 3), np.uint8)), "13 frame images"),
    (lambda r: write_image(r / "frames" / "000000.png", np.zeros((24, 32, 3), np.uint8)), "mixes .jpg and .png"),
    (lambda r: np.save(r / "landmarks.npy", np.zeros((12, 468, 3), np.float32)), "shape (12, 468, 3), expected "
                                                                                  "[N=12, 478, 3]"),
    (lambda r: np.save(r / "landmarks.npy", np.zeros((11, 478, 3), np.float32)), "frame count differs"),
    (lambda r: np.save(r / "blendshapes.npy", np.zeros((12, 52), np.float64)), "dtype float64, expected float32"),
    (lambda r: np.save(r / "blendshapes.npy", np.full((12, 52), np.nan, np.float32)), "NaN/inf at frame(s) [0, 1"),
    (lambda r: (r / "poses.npy").write_bytes(b"garbage"), "not a readable .npy"),
    (lambda r: (r / "intrinsics.json").unlink(), "intrinsics.json: missing (meta.json says step 'pose' finished)"),
    (lambda r: write_wav(r / "audio.wav", np.zeros(1000, np.float32)), "lasts 0.062 s but the 12 frames at 25 fps"),
    (lambda r: (r / "splits.json").write_text('{"train": [0, 99], "val": []}'), "outside 0..11: [99]"),
    (lambda r: (r / "splits.json").write_text('{"train": [0, 1], "val": [1]}'), "train and val share frames"),
    (lambda r: np.save(r / "face_flags.npy", np.zeros(12, np.uint8)), "train split contains frames without a face"),
    (lambda r: _set_meta(r, format_version=99), "format_version 99"),
    (lambda r: _set_meta(r, height=25), "image shape (24, 32, 3), expected (25, 32, 3)"),
    (lambda r: (r / "meta.json").write_text("{not json"), "meta.json: not valid JSON"),
    (lambda r: (r / "meta.json").unlink(), "is not a subject directory"),
])
def test_broken_subjects_fail_clearly(make_subject, break_it, message):
    root = make_subject()
    break_it(root)
    with pytest.raises(DatasetError) as err:
        SubjectDataset(root, require=TRAIN_STEPS)
    assert message in str(err.value)


def test_missing_steps_and_directory(make_subject, tmp_path):
    with pytest.raises(DatasetError, match="subject directory not found"):
        SubjectDataset(tmp_path / "nowhere")
    root = make_subject(steps=("frames", "audio"))
    ds = SubjectDataset(root, require=("frames",))
    with pytest.raises(DatasetError, match="step 'landmarks' not done"):
        _ = ds.landmarks
    with pytest.raises(DatasetError, match=r"step\(s\) landmarks, parsing, background.* not done"):
        SubjectDataset(root, require=TRAIN_STEPS)


def test_bad_frames_are_caught_on_access(make_subject):
    root = make_subject()
    write_image(root / "parsing" / "000004.png", np.full((24, 32), 42, np.uint8))
    write_image(root / "frames" / "000007.jpg", np.zeros((10, 10, 3), np.uint8))
    (root / "torso" / "000002.jpg").write_bytes(b"not a jpeg")
    ds = SubjectDataset(root, require=TRAIN_STEPS)
    with pytest.raises(DatasetError, match="000004.png: label 42 is not a parsing label"):
        ds.parsing(4)
    with pytest.raises(DatasetError, match=r"000007.jpg: image shape \(10, 10, 3\), expected \(24, 32, 3\)"):
        ds.image(7)
    with pytest.raises(DatasetError, match="000002.jpg: image unreadable"):
        ds.torso(2)
    with pytest.raises(IndexError):
        ds.image(12)


def test_writer_marks_steps_only_when_called(tmp_path):
    writer = SubjectWriter(tmp_path / "s")
    writer.init_meta(2, 25, 8, 8, 16000)
    writer.write_frame("frames", 0, np.zeros((8, 8, 3), np.uint8))
    assert SubjectDataset(tmp_path / "s", require=()).steps == ()  # an unfinished step is invisible
    writer.write_frame("frames", 1, np.zeros((8, 8, 3), np.uint8))
    writer.mark_step("frames", seconds=1.5)
    assert SubjectDataset(tmp_path / "s").steps == ("frames",)
    meta = _meta(tmp_path / "s")
    assert meta["steps"]["frames"] == {"done": True, "seconds": 1.5}
    assert meta["blendshape_names"][25] == "jawOpen" and meta["blendshape_names"][9] == "eyeBlinkLeft"
    assert meta["parsing_labels"]["neck"] == 2 and meta["versions"]["numpy"] == np.__version__
    with pytest.raises(ValueError, match="unknown step"):
        writer.mark_step("nonsense")
