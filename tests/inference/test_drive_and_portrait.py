"""Pose / blink schedules and the Portrait-Sync Generator's paste-back and restorer."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.errors import UserInputError


def test_ping_pong_walks_back_and_forth():
    from synctalk.inference.drive import ping_pong

    assert ping_pong([5, 6, 7], 6).tolist() == [5, 6, 7, 6, 5, 6]
    assert ping_pong([4], 3).tolist() == [4, 4, 4]


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_smooth_poses_stay_rotations_and_lose_jitter():
    from synctalk.inference.drive import smooth_poses

    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (60, 1, 1))
    angles = 0.1 + rng.normal(0, 0.05, 60)
    for k in range(60):
        poses[k, :3, :3] = _rotation(angles[k])
        poses[k, :3, 3] = [0, 0, -3 + rng.normal(0, 0.02)]
    smooth = smooth_poses(poses, 3.0)
    np.testing.assert_allclose(smooth[:, :3, :3] @ smooth[:, :3, :3].transpose(0, 2, 1), np.tile(np.eye(3), (60, 1, 1)),
                               atol=1e-9)
    assert np.allclose(np.linalg.det(smooth[:, :3, :3]), 1)
    smoothed_angles = np.arctan2(smooth[:, 1, 0], smooth[:, 0, 0])
    assert np.std(np.diff(smoothed_angles)) < 0.2 * np.std(np.diff(angles))
    assert np.std(np.diff(smooth[:, 2, 3])) < 0.2 * np.std(np.diff(poses[:, 2, 3]))


def test_blinks_and_modes():
    from synctalk.inference.drive import blink_curve, make_drive

    curve = blink_curve(25 * 60, 25.0, np.random.default_rng(1))
    assert curve.min() == 0 and curve.max() == pytest.approx(1, abs=0.05)
    starts = np.nonzero(np.diff((curve > 0.5).astype(int)) == 1)[0]
    assert 10 <= len(starts) <= 30 and np.all(np.diff(starts) >= 25 * 1.7)

    names = ["browDownLeft", "eyeBlinkLeft", "eyeBlinkRight"]
    poses = np.tile(np.eye(4), (10, 1, 1))
    poses[:, 0, 3] = np.arange(10)
    expressions = np.random.default_rng(2).uniform(0, 1, (10, 3))
    drive = make_drive(30, poses, expressions, names, [2, 3, 4], 25.0, pose="train", blink="none")
    assert drive.pose_frames[:6].tolist() == [2, 3, 4, 3, 2, 3]
    np.testing.assert_array_equal(drive.expressions[:, 0], expressions[drive.pose_frames, 0])
    assert np.ptp(drive.expressions[:, 1]) == 0   # eyes held open
    still = make_drive(5, poses, expressions, names, [2, 3, 4], 25.0, pose="still", still_frame=7)
    assert still.pose_frames.tolist() == [7] * 5 and np.all(still.c2w[:, 0, 3] == 7)
    # torso tracks come with the pose frames, and are low-passed with the poses in smooth mode
    tracks = np.tile(np.eye(2, 3), (10, 1, 1))
    tracks[:, 0, 2] = np.arange(10) % 2 * 0.1  # a body jumping between two places every frame
    replay = make_drive(30, poses, expressions, names, list(range(10)), 25.0, torso_tracks=tracks)
    np.testing.assert_array_equal(replay.torso_tracks, tracks[replay.pose_frames])
    assert make_drive(5, poses, expressions, names, [2], 25.0).torso_tracks is None
    smooth = make_drive(30, poses, expressions, names, list(range(10)), 25.0, pose="smooth", torso_tracks=tracks)
    shift = smooth.torso_tracks[5:25, 0, 2]
    assert np.ptp(shift) < 0.02 and abs(shift.mean() - 0.05) < 0.01
    np.testing.assert_allclose(smooth.torso_tracks[:, :, :2], np.tile(np.eye(2), (30, 1, 1)))
    with pytest.raises(UserInputError, match="still-frame 12"):
        make_drive(5, poses, expressions, names, [2], 25.0, pose="still", still_frame=12)
    with pytest.raises(UserInputError, match="--pose"):
        make_drive(5, poses, expressions, names, [2], 25.0, pose="dance")


def _face_landmarks(size=64):
    """A fake 478-point face: an ellipse of points, forehead (10) on top and chin (152) at the bottom."""
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    points = np.stack([size / 2 + 12 * np.sin(angles), size / 2 - 16 * np.cos(angles)], 1)
    points[10], points[152] = [size / 2, size / 2 - 16], [size / 2, size / 2 + 16]
    return points


def test_face_mask_is_soft_inside_the_face_and_reaches_below_the_chin():
    from synctalk.models.portrait import face_mask

    mask = face_mask(_face_landmarks(), 64, 128, chin_margin=0.12, feather=0.04)
    assert mask.shape == (128, 128) and mask[64, 64] == pytest.approx(1, abs=1e-3)
    assert mask[64, 2] == 0 and mask[2, 64] == 0
    assert 0.05 < mask[64, 64 + 21] < 0.95         # feathered near the side of the face (x = 24 subject px)
    chin_row = int((32 + 16) * 2)
    assert mask[chin_row + 2, 64] > 0.5            # the mask goes on below the chin


def test_paste_back_keeps_the_footage_outside_the_mask():
    from synctalk.models.portrait import Crop, face_mask, paste_back

    rng = np.random.default_rng(3)
    original = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    render = np.full((64, 64, 3), 200, np.uint8)
    crop = Crop(x0=30, y0=10, side=80)
    mask = face_mask(_face_landmarks(), 64, 80)
    out = paste_back(render, original, crop, mask, colour_match=False)
    assert out.shape == original.shape
    outside = np.ones((100, 140), bool)
    outside[10:90, 30:110] = mask <= 0
    np.testing.assert_array_equal(out[outside], original[outside])
    assert np.abs(out[50, 70].astype(int) - 200).max() <= 1  # mask centre: the render


def test_untrained_restorer_returns_paste_back_and_only_touches_the_region():
    import torch

    from synctalk.models.portrait import Restorer

    rng = np.random.default_rng(4)
    pasted = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    render = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    mask = np.zeros((30, 30), np.float32)
    region = np.zeros((30, 30), np.float32)
    region[10:20] = 1
    restorer = Restorer(width=4)
    np.testing.assert_array_equal(restorer.restore(pasted, render, mask, region), pasted)
    torch.nn.init.normal_(restorer.out.weight, std=1.0)
    changed = restorer.restore(pasted, render, mask, region) != pasted
    assert changed[10:20].any() and not changed[:10].any() and not changed[20:].any()


def test_portrait_stage_trains_a_restorer_that_render_uses(trained_workspace):
    import json

    from synctalk.inference.video import load_restorer

    workspace, _ = trained_workspace
    stage = json.loads((workspace / "train_log.json").read_text())["stages"]["portrait"]
    assert stage["status"] == "done" and stage["step"] == 2
    assert np.isfinite(stage["val_region_psnr_paste"]) and np.isfinite(stage["val_region_psnr_restored"])
    assert (workspace / "portrait" / "source" / "done.json").is_file()
    assert load_restorer(workspace, "cpu") is not None


def test_portrait_stage_is_skipped_with_a_reason_without_the_original_video(make_subject, tmp_path):
    import json

    from conftest import tiny_train_config

    from synctalk.train.trainer import train

    subject = make_subject(n_frames=8, size=(24, 24))   # meta.json source path "synthetic": no such video
    report = train(subject, tmp_path / "ws", tiny_train_config(lips_steps=0, torso_steps=0), progress=False,
                   stages=("head", "portrait"))
    assert report.stages["portrait"]["status"] == "skipped"
    assert "original video" in json.loads((tmp_path / "ws" / "train_log.json").read_text())["stages"]["portrait"][
        "reason"]
