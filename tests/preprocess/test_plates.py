"""Background plate, gt compositing and torso plates: synthetic scenes with known truth, plus a real clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocess.background import composite_gt, estimate_background, push_pull_fill
from preprocess.torso import torso_plate
from synctalk.data import SubjectDataset
from synctalk.data.contract import PARSING_LABELS


def textured_background(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 6)
    base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
    base[:, w // 2:] += 20  # an edge
    return np.clip(base, 0, 255).astype(np.uint8)


def test_plate_recovers_the_background_behind_a_moving_person():
    truth = textured_background()
    frames, labels = [], []
    for k in range(12):
        frame, lab = truth.copy(), np.zeros(truth.shape[:2], np.uint8)
        x = 20 + 2 * k                                          # the person walks right; x in 42..56 always covered
        cv2.rectangle(lab, (x, 30), (x + 36, 95), 3, -1)
        person = lab > 0
        halo = cv2.dilate(person.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~person
        frame[person] = (250, 0, 250)
        frame[halo] = (200, 60, 200)                            # a halo the parser did not label
        frames.append(frame)
        labels.append(lab)
    plate, seen = estimate_background(frames, labels, margin_px=3)
    never = np.logical_and.reduce([lab > 0 for lab in labels])                      # covered in every frame
    clear_once = np.logical_or.reduce([~cv2.dilate((lab > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
                                       for lab in labels])                          # > margin away, once
    assert never.any() and not seen[never].any()                 # the always-covered strip is unseen
    assert seen[clear_once].all()
    assert np.abs(plate[seen].astype(int) - truth[seen]).mean() < 1.0  # seen pixels: exact, no halo leak
    assert (plate[..., 1][seen] > 10).all()                      # no magenta anywhere in the plate
    fill_error = np.abs(plate[~seen].astype(float) - truth[~seen]).mean()
    flat_error = np.abs(truth[seen].mean(axis=0) - truth[~seen]).mean()
    assert fill_error < 0.6 * flat_error                         # the fill follows the surroundings (~0.4)


def test_push_pull_fill_is_smooth_and_exact_where_known():
    gradient = np.tile(np.linspace(0, 100, 64, dtype=np.float32), (64, 1))[..., None]
    known = np.ones((64, 64), bool)
    known[20:44, 20:44] = False
    filled = push_pull_fill(np.where(known[..., None], gradient, 0), known)
    assert np.array_equal(filled[known], gradient[known])
    assert np.abs(filled[~known] - gradient[~known]).mean() < 6   # linear ramp continued across the hole


def test_composite_gt():
    truth = textured_background()
    plate = np.full_like(truth, 7)
    labels = np.zeros(truth.shape[:2], np.uint8)
    labels[30:70, 40:90] = PARSING_LABELS["torso"]
    gt = composite_gt(truth, labels, plate)
    assert (gt[:20] == 7).all() and (gt[:, :30] == 7).all()      # background far from the person: the plate
    assert np.array_equal(gt[35:65, 45:85], truth[35:65, 45:85])  # inside the person: the frame


def test_torso_plate_removes_head_and_fills_the_neck(may_subject):
    _, root, _ = may_subject
    ds = SubjectDataset(root, require=("frames", "landmarks", "parsing", "background"))
    plate = cv2.cvtColor(cv2.imread(str(root / "background.png")), cv2.COLOR_BGR2RGB)
    i = 60
    rgb, labels, lms = ds.image(i), ds.parsing(i), ds.landmarks[i]
    out = torso_plate(rgb, labels, lms, plate)
    head = np.isin(labels, (1, 4, 5, 6, 7))
    far_head = cv2.erode(head.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    far_head[int(lms[152, 1]) - 60:, :] = False                     # away from the neck fill
    assert np.array_equal(out[far_head], plate[far_head])
    torso = labels == PARSING_LABELS["torso"]
    assert np.array_equal(out[torso], rgb[torso])
    # Just above the chin (hidden neck), the plate holds neck colour, not background.
    chin = lms[152, :2].astype(int)
    face_h = lms[152, 1] - lms[10, 1]
    hidden = out[chin[1] - int(0.05 * face_h), chin[0] - 5:chin[0] + 5].astype(float).mean(axis=0)
    neck = rgb[labels == PARSING_LABELS["neck"]].astype(float).mean(axis=0)
    background = plate[chin[1] - int(0.05 * face_h), chin[0] - 5:chin[0] + 5].astype(float).mean(axis=0)
    assert np.linalg.norm(hidden - neck) < 0.5 * np.linalg.norm(background - neck)
    no_face = torso_plate(rgb, labels, None, plate)
    assert np.array_equal(no_face[head], plate[head])


@pytest.mark.parametrize("feather", [0.0, 1.5])
def test_composite_gt_is_identity_without_background(feather):
    truth = textured_background()
    labels = np.full(truth.shape[:2], PARSING_LABELS["torso"], np.uint8)
    assert np.array_equal(composite_gt(truth, labels, np.zeros_like(truth), feather), truth)
