"""Background plate and gt compositing (preprocess/background.py).

Synthetic scenes with a known background (the plate is measured against the truth), the margin against a
person's unlabelled halo, a parser miss that leaks into a few frames, the harmonic fill against closed-form
answers, and a real clip whose label maps are built here from MediaPipe selfie segmentation and the Face
Landmarker's face oval (so the file does not depend on preprocess/parsing.py). `may_scene` is shared with
test_torso.py.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
from conftest import real_file

from preprocess.background import (
    _solve_membrane,
    background_samples,
    composite_gt,
    estimate_background,
    harmonic_fill,
)
from synctalk.data.contract import PARSING_LABELS

L = PARSING_LABELS


def textured_background(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A room wall out of focus, `[h, w, 3] uint8` within 20..240: broad colour variation (smooth noise, sigma
    12 px), a fine grain (sigma 1.5 px) and two hard edges."""
    rng = np.random.default_rng(seed)

    def noise(sigma: float) -> np.ndarray:
        n = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (0, 0), sigma)
        return (n - n.min()) / (n.max() - n.min())

    base = 40 + 150 * noise(12) + 25 * noise(1.5)
    base[:, w * 2 // 3:] += 20                   # a vertical edge (a door frame)
    base[h // 3: h // 3 + 4] -= 25               # a horizontal stripe (a shelf)
    return np.clip(base, 0, 255).astype(np.uint8)


def person_mask(shape: tuple[int, int], x: int) -> np.ndarray:
    """A head (ellipse) on a body (rectangle down to the bottom edge), centred at column x."""
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (x, 45), (18, 24), 0, 0, 360, 1, -1)
    cv2.rectangle(mask, (x - 8, 60), (x + 8, 75), 1, -1)
    cv2.rectangle(mask, (x - 35, 75), (x + 35, h - 1), 1, -1)
    return mask.astype(bool)


PERSON = np.array([230, 40, 200], np.uint8)     # magenta: no background pixel comes near it


def moving_person_clip(n: int = 30, step: int = 1, halo_px: int = 0):
    """Frames, labels and truth: the person sways over 2 * n * step px, the halo is unlabelled."""
    truth = textured_background()
    frames, labels = [], []
    for k in range(n):
        x = 60 + step * int(round(20 * np.sin(2 * np.pi * k / n)))
        person = person_mask(truth.shape[:2], x)
        frame = truth.copy()
        if halo_px:
            # a soft, unlabelled fringe: person colour fading out over halo_px (hair, motion blur)
            distance = cv2.distanceTransform((~person).astype(np.uint8), cv2.DIST_L2, 3)
            fade = np.clip(1 - distance / (halo_px + 1), 0, 1)[..., None] * ~person[..., None]
            frame = (frame * (1 - fade) + PERSON * fade).astype(np.uint8)
        frame[person] = PERSON
        labels.append(np.where(person, L["torso"], L["background"]).astype(np.uint8))
        frames.append(frame)
    return frames, labels, truth


def test_plate_matches_the_truth_where_seen_and_fills_the_rest_plausibly():
    frames, labels, truth = moving_person_clip()
    plate, seen = estimate_background(frames, labels, margin_px=3)
    covered = np.stack([lab > 0 for lab in labels])
    never = covered.all(axis=0)
    assert plate.shape == truth.shape and plate.dtype == np.uint8 and seen.dtype == bool
    # `seen` is False exactly where the person always is, up to the erosion margin: never-covered pixels are
    # unseen, and every unseen pixel is within the margin of the person in every frame
    assert never.sum() > 1000 and not seen[never].any()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))                       # radius 3 = the margin
    always_near = np.logical_and.reduce([cv2.dilate(c.astype(np.uint8), disc).astype(bool) for c in covered])
    assert not (~seen & ~always_near).any()
    assert (~seen).sum() < 1.3 * never.sum()
    error = np.abs(plate.astype(int) - truth).mean(axis=2)
    assert error[seen].mean() < 1.0                              # seen pixels: the truth
    assert np.percentile(error[seen], 99) < 8
    # the fill: far better than a constant colour, and within the range of its surroundings
    fill_error = error[~seen].mean()
    flat_error = np.abs(truth[seen].mean(axis=0) - truth[~seen].astype(float)).mean()
    assert fill_error < 0.5 * flat_error, (fill_error, flat_error)
    ring = cv2.dilate((~seen).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & seen
    for c in range(3):
        assert truth[ring, c].min() - 2 <= plate[~seen, c].min() and plate[~seen, c].max() <= truth[ring, c].max() + 2


def test_harmonic_fill_beats_opencv_inpainting_on_a_big_hole():
    """The reason for the harmonic fill: on a large hole Telea/NS inpainting smears streaks."""
    frames, labels, truth = moving_person_clip()
    plate, seen = estimate_background(frames, labels, margin_px=3)
    hole = (~seen).astype(np.uint8)
    ours = np.abs(plate.astype(float) - truth)[~seen].mean()
    for method in (cv2.INPAINT_TELEA, cv2.INPAINT_NS):
        theirs = cv2.inpaint(np.where(seen[..., None], plate, 0).astype(np.uint8), hole, 5, method)
        assert ours < np.abs(theirs.astype(float) - truth)[~seen].mean()


def test_margin_keeps_an_unlabelled_halo_out_of_the_plate():
    """The same clip with and without a 3 px unlabelled person-coloured fringe gives the same plate."""
    clean_frames, labels, truth = moving_person_clip()
    halo_frames, _, _ = moving_person_clip(halo_px=3)
    clean, seen = estimate_background(clean_frames, labels, margin_px=5)
    plate, halo_seen = estimate_background(halo_frames, labels, margin_px=5)
    assert np.array_equal(seen, halo_seen)
    assert np.abs(plate.astype(int) - clean).max() <= 1         # the halo leaves no trace at all
    assert np.abs(plate.astype(int) - truth).mean(axis=2)[seen].mean() < 1.0
    # without a margin the halo leaks in: the measurement above can fail
    leaky, _ = estimate_background(halo_frames, labels, margin_px=0)
    reference, _ = estimate_background(clean_frames, labels, margin_px=0)
    assert np.abs(leaky.astype(int) - reference).max() > 30


def test_a_parser_miss_in_a_few_frames_does_not_stain_the_plate():
    """A dark clump next to the person is labelled background in a few frames (a missed hair tip)."""
    frames, labels, truth = moving_person_clip(n=40)
    clump = np.zeros(truth.shape[:2], np.uint8)
    clump_centre = (95, 72)                                      # beside the right shoulder of frame 0
    cv2.circle(clump, clump_centre, 6, 1, -1)
    clump = clump.astype(bool)
    for k in range(0, 6):
        frames[k] = frames[k].copy()
        frames[k][clump] = (25, 20, 15)                          # dark hair, labels still say background
    plate, seen = estimate_background(frames, labels, margin_px=3)
    region = cv2.dilate(clump.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    error = np.abs(plate.astype(int) - truth).mean(axis=2)
    assert error[region].max() < 20, error[region].max()
    assert error[seen].mean() < 1.5


def test_background_samples_prefer_frames_far_from_the_person():
    labels = np.zeros((3, 40, 40), np.uint8)
    labels[0, :, :10] = 1          # pixel (20, 20) is 10 px from the person
    labels[1, :, :18] = 1          # 2 px: inside the margin
    labels[2, :, :4] = 1           # 16 px
    valid, clearance = background_samples(list(labels), margin_px=3)
    assert clearance[20, 20] == 12                               # capped at 4 * margin
    assert valid[:, 20, 20].tolist() == [True, False, True]     # 10 >= max(3, 12 / 2) = 6
    assert valid[:, 20, 38].tolist() == [True, True, True]
    assert not valid[:, 20, 0].any()                             # always on the person


def test_harmonic_fill_reproduces_harmonic_functions():
    h, w = 70, 90
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = 40 + 1.5 * x                                          # linear: harmonic, zero flux at top/bottom
    known = np.ones((h, w), bool)
    known[15:55, 20:70] = False
    filled = harmonic_fill(ramp, known)
    assert filled.shape == ramp.shape and filled.dtype == np.float32
    assert np.array_equal(filled[known], ramp[known].astype(np.float32))
    assert np.abs(filled - ramp).max() < 1e-3
    # a saddle x^2 - y^2 is harmonic too; with known values all around the hole, the fill is exact
    saddle = ((x - 45) ** 2 - (y - 35) ** 2) / 20 + 100
    assert np.abs(harmonic_fill(saddle[..., None], known)[..., 0] - saddle).max() < 1e-3


def test_coarse_to_fine_fill_is_close_to_the_exact_solve():
    truth = textured_background(200, 240, seed=3).astype(np.float32)
    known = np.ones(truth.shape[:2], bool)
    cv2.ellipse(known.view(np.uint8), (120, 130), (80, 100), 0, 0, 360, 0, -1)
    assert (~known).sum() > 20_000
    exact = _solve_membrane(truth, known.astype(np.float32))
    fast = harmonic_fill(truth, known, max_direct=5_000, band_px=8)
    assert np.abs(fast - exact)[~known].mean() < 1.5
    assert np.array_equal(fast[known], truth[known])


def test_soft_confidence_pulls_towards_the_neighbours():
    values = np.full((5, 5), 10.0, np.float32)
    values[2, 2] = 110.0
    known = np.ones((5, 5), np.float32)
    for confidence, expected in ((0.0, 10.0), (0.5, 60.0), (0.8, 90.0)):
        known[2, 2] = confidence
        # one free pixel: u = (s v + 4 * 10) / (s + 4) with s = 4 c / (1 - c)
        assert harmonic_fill(values, known)[2, 2] == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="at least one known pixel"):
        harmonic_fill(values, np.zeros((5, 5), bool))


def test_estimate_background_checks_its_inputs():
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="as many label maps"):
        estimate_background([frame], [])
    with pytest.raises(ValueError, match="frame 0"):
        estimate_background([frame], [np.zeros((8, 9), np.uint8)])
    # no person at all: the plate is the median, everything seen
    plate, seen = estimate_background([frame + 5, frame + 7, frame + 9], [np.zeros((8, 8), np.uint8)] * 3)
    assert seen.all() and (plate == 7).all()
    # person everywhere: nothing seen, a neutral plate
    plate, seen = estimate_background([frame], [np.full((8, 8), L["torso"], np.uint8)])
    assert not seen.any() and plate.shape == (8, 8, 3)


def test_composite_gt_replaces_the_background_with_a_feathered_edge():
    plate = np.full((120, 160, 3), 7, np.uint8)
    labels = np.zeros(plate.shape[:2], np.uint8)
    labels[30:90, 40:110] = L["torso"]
    labels[10:30, 60:90] = L["head"]
    frame = np.where(labels[..., None] > 0, PERSON, plate + 3).astype(np.uint8)  # static camera: ~ the plate
    gt = composite_gt(frame, labels, plate, feather_px=1.0)
    person = labels > 0
    far_out = ~cv2.dilate(person.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    far_in = cv2.erode(person.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert np.array_equal(gt[far_out], plate[far_out])          # background: exactly the plate
    assert np.array_equal(gt[far_in], frame[far_in])            # person: exactly the frame
    # across the edge the colour ramps through intermediate values (no hard seam), 50% at the boundary
    row = gt[60, 34:47, 0].astype(int)                           # edge between columns 39 and 40
    assert np.all(np.diff(row) >= 0) and 7 < row[5] < 230 and 7 < row[6] < 230
    # Gaussian sigma 1 centred on the boundary: alpha ~0.31 just outside, ~0.69 just inside
    assert abs(int(gt[60, 40, 0]) - (7 + 0.69 * 223)) <= 3 and 7 <= gt[60, 39, 0] <= 10
    hard = composite_gt(frame, labels, plate, feather_px=0)
    assert np.array_equal(hard, np.where(person[..., None], frame, plate))


# ----------------------------------------------------------------------------------------------------------------
# Real clip: label maps from selfie segmentation + the face oval (test-only, see the module docstring)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
NOSE_TIP, CHIN = 1, 152


def simple_labels(person_prob: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
    """A rough label map: person pixels above the jaw near the face = head (lips marked), below the chin in the
    face's central columns = neck (down to a third of a face width), the rest of the person = torso."""
    h, w = person_prob.shape
    person = person_prob > 0.5
    labels = np.where(person, L["torso"], L["background"]).astype(np.uint8)
    if landmarks is None:
        return labels
    oval = landmarks[list(FACE_OVAL), :2]
    face = np.zeros((h, w), np.uint8)
    cv2.fillPoly(face, [np.round(oval).astype(np.int32)], 1)
    lower = oval[oval[:, 1] > landmarks[NOSE_TIP, 1]]
    order = np.argsort(lower[:, 0])
    xs = np.arange(w)
    jaw = np.interp(xs, lower[order, 0], lower[order, 1], left=-1, right=-1)
    ys = np.arange(h)[:, None]
    x0, x1 = oval[:, 0].min(), oval[:, 0].max()
    face_w = x1 - x0
    near = (xs[None] > x0 - 0.25 * face_w) & (xs[None] < x1 + 0.25 * face_w)
    chin_x, chin_y = landmarks[CHIN, :2]
    above = np.where(jaw[None] >= 0, ys < jaw[None], ys < chin_y - 0.15 * face_w)
    head = (person & near & above) | (face > 0)
    neck = person & ~head & (np.abs(xs[None] - chin_x) < 0.3 * face_w) & (ys < chin_y + 0.33 * face_w)
    labels[head] = L["head"]
    labels[neck] = L["neck"]
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [np.round(landmarks[list(LIPS), :2]).astype(np.int32)], 1)
    labels[lips > 0] = L["lips"]
    return labels


@functools.lru_cache(maxsize=1)
def _may_scene(step: int):
    from mediapipe.tasks.python import BaseOptions, vision

    from synctalk.io.media import read_frames
    from synctalk.runtime import import_mediapipe, native_stderr_captured

    video = real_file("video/may_5s_25fps.mp4")
    model = real_file("models/face_landmarker.task")
    mp = import_mediapipe()
    frames = [np.ascontiguousarray(f) for i, f in enumerate(read_frames(video, fps=25)) if i % step == 0]
    labels, landmarks = [], []
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)), num_faces=1)
    with native_stderr_captured():
        segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        landmarker = vision.FaceLandmarker.create_from_options(options)
    try:
        for frame in frames:
            h, w = frame.shape[:2]
            with native_stderr_captured():
                prob = segmenter.process(frame).segmentation_mask
                found = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame))
            points = None
            if found.face_landmarks:
                points = np.array([[p.x * w, p.y * h, p.z * w] for p in found.face_landmarks[0]], np.float32)
            landmarks.append(points)
            labels.append(simple_labels(prob, points))
    finally:
        segmenter.close()
        landmarker.close()
    return frames, labels, landmarks


def may_scene(step: int = 3):
    """Every `step`-th frame of the 5 s May clip (42 frames), their simple label maps and landmarks (computed
    once per test session; skips when the clip or the landmarker bundle is missing)."""
    return _may_scene(step)


@pytest.fixture(scope="module")
def may():
    frames, labels, landmarks = may_scene()
    plate, seen = estimate_background(frames, labels)
    return frames, labels, landmarks, plate, seen


def test_real_plate_has_no_person_left(may):
    frames, labels, _, plate, seen = may
    stack = np.stack(frames).astype(np.int16)
    always_bg = np.logical_and.reduce([lab == L["background"] for lab in labels])
    always_bg = cv2.erode(always_bg.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    assert always_bg.mean() > 0.2 and seen.mean() > 0.3
    # where every frame shows background, the plate is the temporal median (no ghost of the person)
    median = np.median(stack, axis=0)
    error = np.abs(plate - median).max(axis=2)
    assert error[always_bg].mean() < 1.5 and np.percentile(error[always_bg], 99.5) < 6
    # where the person only sometimes is, the plate is what that pixel shows when the person is away: it
    # matches the pixel in a good share of the frames (a ghost of the person would match only person frames)
    often_bg = np.mean([lab == L["background"] for lab in labels], axis=0) >= 0.3
    matches = (np.abs(stack - plate[None].astype(np.int16)).max(axis=3) <= 12).mean(axis=0)
    assert (often_bg & ~always_bg).sum() > 5000
    assert (matches[often_bg] < 0.1).mean() < 0.01
    # the fill behind the person is smooth (no streaks): small gradients inside the hole
    inside = cv2.erode((~seen).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    grad = np.abs(np.diff(plate.astype(float), axis=1)).max(axis=2)[:, :-1]
    assert np.percentile(grad[inside[:, :-2]], 99) < 4


def test_real_gt_keeps_the_person_and_barely_changes_a_static_background(may):
    frames, labels, _, plate, _ = may
    i = 20
    gt = composite_gt(frames[i], labels[i], plate)
    person = labels[i] != L["background"]
    inner = cv2.erode(person.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert np.array_equal(gt[inner], frames[i][inner])
    diff = np.abs(gt.astype(int) - frames[i]).max(axis=2)
    assert diff[person].mean() < 1.0
    assert diff.mean() < 4                                      # the background is static: plate ~ frame
