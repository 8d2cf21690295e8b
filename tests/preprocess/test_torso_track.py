"""The torso track: recovers known body motions of a synthetic clip (the head moving on its own), interpolates frames
without a torso, and the real clip's track makes the held-out torso sharper than the plain mean."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.torso_track import track_torso
from synctalk.data.contract import PARSING_LABELS
from synctalk.errors import ConfigError
from synctalk.models.torso import pixel_affine

SIZE = 96


def _full(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0, 0, 1]])


def synthetic_clip(motions: list[np.ndarray], seed: int = 0):
    """Frames whose body (a textured trapezoid) moves by ``motions`` (normalised affine maps of a canonical body)
    while the head (a disc) moves at random, over a static background."""
    import cv2

    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 1, (SIZE, SIZE, 3)).astype(np.float32), (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    body = np.zeros((SIZE, SIZE), np.float32)
    cv2.fillPoly(body, [np.array([[30, 55], [66, 55], [90, 96], [6, 96]])], 1.0)
    background = np.full((SIZE, SIZE, 3), 0.8, np.float32)
    frames = []
    for motion in motions:
        matrix = pixel_affine(motion, SIZE, SIZE)
        alpha = cv2.warpAffine(body, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR)[..., None]  # sub-pixel edges
        colour = cv2.warpAffine(texture * 0.6, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        image = alpha * colour + (1 - alpha) * background
        labels = np.where(alpha[..., 0] > 0.5, PARSING_LABELS["torso"], PARSING_LABELS["background"]).astype(np.uint8)
        centre = (int(48 + rng.integers(-4, 5)), int(26 + rng.integers(-3, 4)))
        cv2.circle(image, centre, 14, (0.9, 0.6, 0.5), -1)
        cv2.circle(labels, centre, 14, PARSING_LABELS["head"], -1)
        frames.append(((image * 255).round().astype(np.uint8), labels))
    return frames


def test_recovers_known_body_motion_and_fills_frames_without_a_torso():
    rng = np.random.default_rng(1)
    motions = []
    for _ in range(9):
        angle, scale = rng.uniform(-0.03, 0.03), rng.uniform(0.97, 1.03)
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        motions.append(np.c_[linear, rng.uniform(-0.06, 0.06, 2)])  # up to 3 px at 96 px
    frames = synthetic_clip(motions)
    no_torso = 2
    frames[no_torso] = (frames[no_torso][0], np.zeros((SIZE, SIZE), np.uint8))
    track = track_torso(len(frames), lambda i: frames[i], "affine", progress=False)
    assert track.tracks.shape == (9, 2, 3) and track.tracks.dtype == np.float32
    assert list(np.flatnonzero(track.failed)) == [no_torso]
    np.testing.assert_allclose(track.tracks[no_torso], (track.tracks[no_torso - 1] + track.tracks[no_torso + 1]) / 2,
                               atol=1e-6)
    # canonical coordinates are arbitrary (the body's average place); what counts is where each frame puts the body
    # relative to the others: frame j's body pixels mapped to frame i by track_i ∘ track_j^-1 against the truth
    body = np.argwhere(frames[4][1] == PARSING_LABELS["torso"])[:, ::-1] + 0.5  # (x, y) pixel centres
    points = np.c_[body / SIZE * 2 - 1, np.ones(len(body))].T
    errors = []
    for i in range(9):
        if i == no_torso:
            continue
        got = _full(track.tracks[i]) @ np.linalg.inv(_full(track.tracks[4])) @ points
        truth = _full(motions[i]) @ np.linalg.inv(_full(motions[4])) @ points
        errors.append(np.abs(got - truth)[:2] * SIZE / 2)
    errors = np.concatenate(errors, axis=1)
    # the bodies move by up to ~4 px; the track is right to a fifth of a pixel on average (a few edge pixels near
    # the image border, where the synthetic texture is mirrored, are off by up to half a pixel)
    assert errors.mean() < 0.2 and errors.max() < 0.6, (errors.mean(), errors.max())
    np.testing.assert_allclose(track.tracks[~track.failed].mean(0), np.eye(2, 3), atol=1e-5)  # centred
    assert track.stats(SIZE)["interpolated_frames"] == 1 and track.stats(SIZE)["mean_correlation"] > 0.95

    identity = track_torso(len(frames), lambda i: frames[i], "none", progress=False)
    np.testing.assert_array_equal(identity.tracks, np.tile(np.eye(2, 3), (9, 1, 1)))
    with pytest.raises(ConfigError, match="torso_track_motion"):
        track_torso(1, lambda i: frames[i], "homography")


def test_real_clip_track_sharpens_the_held_out_torso(may_subject):
    """On the real clip, the training frames' mean torso moved by each held-out frame's track predicts that
    frame's neck + torso better than the plain mean."""
    from synctalk.data import SubjectDataset
    from synctalk.data.contract import TORSO_LABELS
    from synctalk.models.torso import warp_to_canonical

    _, root, _ = may_subject
    ds = SubjectDataset(root, require=("torso_track", "splits", "background"))
    tracks = ds.torso_track
    train, val = ds.split("train"), ds.split("val")
    frames = {f: ds.gt(f).astype(np.float32) for f in train + val}
    plain = np.mean([frames[f] for f in train], axis=0)
    aligned = np.mean([warp_to_canonical(frames[f], tracks[f]) for f in train], axis=0)

    def torso_mse(predict) -> float:
        errors = [((predict(f) - frames[f]) ** 2).mean(-1)[np.isin(ds.parsing(f), TORSO_LABELS)] for f in val]
        return float(np.concatenate(errors).mean())

    import cv2

    moved = torso_mse(lambda f: cv2.warpAffine(aligned, pixel_affine(tracks[f], ds.width, ds.height),
                                               (ds.width, ds.height), borderMode=cv2.BORDER_REPLICATE))
    assert moved < 0.8 * torso_mse(lambda f: plain), (moved, torso_mse(lambda f: plain))
