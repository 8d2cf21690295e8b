"""Torso plates (preprocess/torso.py): a synthetic portrait with a known neck colour, the failure cases (a gap
between chin and neck, no neck label, no face) and a real frame of the May clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_background import may_scene

from preprocess.background import estimate_background
from preprocess.torso import (
    CHIN,
    FOREHEAD,
    JAW_RIM,
    LOWER_JAW,
    LOWER_LIP_BOTTOM,
    MOUTH_CORNERS,
    REACH,
    jaw_y,
    neck_span,
    torso_plate,
)
from synctalk.data.contract import HEAD_LABELS, PARSING_LABELS

L = PARSING_LABELS
SKIN = np.array([225, 185, 160], np.float64)
NECK = np.array([200, 150, 120], np.float64)
SUIT = np.array([40, 50, 90], np.float64)
CX, CY, AX, AY = 100, 75, 38, 50          # the head ellipse: chin at (100, 125), forehead at (100, 25)
FACE_H = 2 * AY


def portrait(neck_top: int = 110, neck_label: bool = True, seed: int = 0):
    """(frame, labels, landmarks, plate) of a 200x200 synthetic bust: a teal textured wall, a suit, a neck
    (x 80..119) from `neck_top` down, an elliptic head drawn over it, lips. Landmarks: the indices torso.py
    uses, placed on the ellipse; the rest at the face centre."""
    rng = np.random.default_rng(seed)
    h = w = 200
    plate = np.clip(cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 6) * 400
                    + np.array([0, 60, 80]), 0, 255).astype(np.uint8)
    frame, labels = plate.copy(), np.zeros((h, w), np.uint8)
    grain = rng.normal(0, 4, (h, w, 3))
    frame[neck_top:, 80:120] = np.clip(NECK + grain[neck_top:, 80:120], 0, 255)
    labels[neck_top:, 80:120] = L["neck"] if neck_label else L["torso"]
    frame[160:, 30:170] = SUIT
    labels[160:, 30:170] = L["torso"]
    head = np.zeros((h, w), np.uint8)
    cv2.ellipse(head, (CX, CY), (AX, AY), 0, 0, 360, 1, -1)
    head = head.astype(bool)
    frame[head] = SKIN
    labels[head] = L["head"]
    lips = np.zeros((h, w), np.uint8)
    cv2.ellipse(lips, (100, 101), (12, 5), 0, 0, 360, 1, -1)
    frame[lips > 0] = (200, 80, 90)
    labels[lips > 0] = L["lips"]
    landmarks = np.tile(np.array([CX, CY, 0], np.float32), (478, 1))
    angles = np.deg2rad(np.linspace(155, 25, len(LOWER_JAW)))          # image-left to image-right, chin at 90
    for index, a in zip(LOWER_JAW, angles, strict=True):
        landmarks[index, :2] = (CX + AX * np.cos(a), CY + AY * np.sin(a))
    landmarks[FOREHEAD, :2] = (CX, CY - AY)
    landmarks[CHIN, :2] = (CX, CY + AY)
    landmarks[MOUTH_CORNERS[0], :2] = (88, 101)
    landmarks[MOUTH_CORNERS[1], :2] = (112, 101)
    landmarks[LOWER_LIP_BOTTOM, :2] = (100, 106)
    return frame, labels, landmarks, plate


def colour(image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return image[rows, cols].reshape(-1, 3).astype(np.float64).mean(axis=0)


def test_head_becomes_plate_body_stays_and_the_hidden_neck_is_painted():
    frame, labels, landmarks, plate = portrait()
    out = torso_plate(frame, labels, landmarks, plate)
    assert out.shape == frame.shape and out.dtype == np.uint8
    head = np.isin(labels, HEAD_LABELS)
    body = (labels == L["neck"]) | (labels == L["torso"])
    assert np.array_equal(out[body], frame[body])                       # neck and torso: untouched
    # head pixels away from the painted neck (above it, or beside the neck's columns and above the jaw's rim)
    # are exactly the plate
    away = head.copy()
    away[int(CY + AY - REACH * FACE_H) - 2:, 76:124] = False
    rim_top = jaw_y(landmarks, np.arange(200) + 0.5) - JAW_RIM * FACE_H
    away &= np.arange(200)[:, None] < rim_top[None, :] - 1
    assert away.sum() > 3500 and np.array_equal(out[away], plate[away])
    # background far from the body is the plate
    far = ~cv2.dilate((labels > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(out[far], plate[far])
    # just above the chin, inside the neck's columns: neck colour (a little shaded), not the plate's
    hidden = colour(out, slice(112, 124), slice(92, 108))
    behind = colour(plate, slice(112, 124), slice(92, 108))
    assert np.linalg.norm(hidden - NECK) < 0.3 * np.linalg.norm(behind - NECK)
    assert np.all(hidden <= NECK + 3) and np.all(hidden >= 0.75 * NECK)   # a shadow, not a dark band
    # darker towards the top (rows where the paint is opaque), like the shadow under a chin
    upper, lower = colour(out, slice(113, 117), slice(95, 105)), colour(out, slice(121, 125), slice(95, 105))
    assert np.all(upper < lower - 5) and np.all(upper > 0.75 * lower)


def test_painted_neck_has_soft_sides_and_stays_within_the_jaw():
    frame, labels, landmarks, plate = portrait(neck_top=133)            # background between chin and neck
    out = torso_plate(frame, labels, landmarks, plate).astype(np.float64)
    row = 129
    assert (labels[row, 60:140] == L["background"]).all()
    # where the painted neck borders visible background it fades in over several pixels, not a hard step
    for profile in (np.linalg.norm(out[row, 60:100] - plate[row, 60:100], axis=1),
                    np.linalg.norm(out[row, 139:99:-1] - plate[row, 139:99:-1], axis=1)):
        steps = np.abs(np.diff(profile))
        assert profile[-1] > 100 and steps.max() < 0.6 * profile[-1]
        assert np.all(profile[:15] == 0)                                # background beside the neck: untouched
    # on head pixels the paint stays within the jaw's width
    row = 112
    assert np.array_equal(out[row, :64], plate[row, :64]) and np.array_equal(out[row, 137:], plate[row, 137:])
    assert neck_span(labels, landmarks) == pytest.approx((80, 120), abs=1)


def test_a_gap_between_chin_and_neck_is_closed():
    """The neck label starts 8 px below the chin (background in between): no background shows there."""
    frame, labels, landmarks, plate = portrait(neck_top=133)
    assert (labels[126:132, 90:110] == L["background"]).all()
    out = torso_plate(frame, labels, landmarks, plate)
    gap = colour(out, slice(126, 132), slice(92, 108))
    behind = colour(plate, slice(126, 132), slice(92, 108))
    assert np.linalg.norm(gap - NECK) < 0.3 * np.linalg.norm(behind - NECK)


def test_without_a_neck_label_the_jaw_and_chin_skin_stand_in():
    frame, labels, landmarks, plate = portrait(neck_label=False)       # the neck came out as torso
    span = neck_span(labels, landmarks)
    jaw_w = landmarks[LOWER_JAW[-1], 0] - landmarks[LOWER_JAW[0], 0]
    assert span == pytest.approx((CX - 0.4 * jaw_w, CX + 0.4 * jaw_w), abs=0.5)
    out = torso_plate(frame, labels, landmarks, plate)
    hidden = colour(out, slice(114, 124), slice(95, 105))
    behind = colour(plate, slice(114, 124), slice(95, 105))
    assert np.linalg.norm(hidden - 0.8 * SKIN) < 0.3 * np.linalg.norm(behind - 0.8 * SKIN)
    body = labels == L["torso"]
    assert np.array_equal(out[body], frame[body])


@pytest.mark.parametrize("landmarks", [None, "nan"])
def test_no_face_just_removes_the_head(landmarks):
    frame, labels, points, plate = portrait()
    if landmarks == "nan":
        points[:] = np.nan
        landmarks = points
    out = torso_plate(frame, labels, landmarks, plate)
    head = np.isin(labels, HEAD_LABELS)
    body = (labels == L["neck"]) | (labels == L["torso"])
    assert np.array_equal(out[head], plate[head])
    assert np.array_equal(out[body], frame[body])


def test_real_frame(tmp_path):
    frames, labels, landmarks = may_scene()
    plate, _ = estimate_background(frames, labels)
    i = next(k for k in range(20, len(frames)) if landmarks[k] is not None)
    rgb, lab, lms = frames[i], labels[i], landmarks[i]
    out = torso_plate(rgb, lab, lms, plate)
    head = np.isin(lab, HEAD_LABELS)
    body = (lab == L["neck"]) | (lab == L["torso"])
    assert np.array_equal(out[body], rgb[body])
    chin_x, chin_y = lms[CHIN, :2]
    face_h = float(np.linalg.norm(lms[CHIN, :2] - lms[FOREHEAD, :2]))
    away = head.copy()
    away[int(chin_y - 0.25 * face_h):] = False                         # above the painted neck (and its roll)
    assert away.sum() > 20_000 and np.array_equal(out[away], plate[away])
    # just above the chin (the hidden neck): neck colour, not the plate's
    rows = slice(int(chin_y - 0.07 * face_h), int(chin_y - 0.02 * face_h))
    cols = slice(int(chin_x) - 8, int(chin_x) + 8)
    assert head[rows, cols].all()
    neck = lab == L["neck"]
    neck_top = neck & (np.arange(lab.shape[0])[:, None] < chin_y + 0.15 * face_h)
    neck_colour = rgb[neck_top].astype(np.float64).mean(axis=0)
    hidden, behind = colour(out, rows, cols), colour(plate, rows, cols)
    assert np.linalg.norm(hidden - neck_colour) < 0.5 * np.linalg.norm(behind - neck_colour)
    no_face = torso_plate(rgb, lab, None, plate)
    assert np.array_equal(no_face[head], plate[head])
