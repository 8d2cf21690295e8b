"""Parsing masks (preprocess/parsing.py): the polygon helpers with hand-computed numbers, a synthetic scene whose
truth is known, region placement on real frames with real landmarks, temporal stability, frames without a face,
a tight 256x256 crop, streaming, the parser registry.

Real landmarks come from the Face Landmarker bundle run here on a few dozen frames (module-scoped fixtures), so
the file does not depend on the rest of the pipeline.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import real_file

from preprocess.parsing import (
    PARSERS,
    FaceFrame,
    PersonSegmenter,
    edges_to_paths,
    face_mesh_regions,
    fill_polygon,
    jaw_line,
    join_chains,
    make_parser,
    parse_frame,
    parse_frames,
)
from synctalk.data.contract import FACE_DETECTED, FACE_INTERPOLATED, FACE_MISSING, HEAD_LABELS, PARSING_LABELS
from synctalk.errors import UserInputError

L = PARSING_LABELS
N_MAY = 40


def detect_landmarks(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Face Landmarker (VIDEO mode) on `frames`: landmarks `[N, 478, 3]` float32 pixels and flags `[N]` uint8."""
    from synctalk.runtime import import_mediapipe, native_stderr_captured

    mp = import_mediapipe()
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(real_file("models/face_landmarker.task"))),
        running_mode=vision.RunningMode.VIDEO, num_faces=1)
    with native_stderr_captured():
        detector = vision.FaceLandmarker.create_from_options(options)
    landmarks = np.zeros((len(frames), 478, 3), np.float32)
    flags = np.zeros(len(frames), np.uint8)
    try:
        for i, frame in enumerate(frames):
            height, width = frame.shape[:2]
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            with native_stderr_captured():
                result = detector.detect_for_video(image, i * 40)
            if result.face_landmarks:
                landmarks[i] = [(p.x * width, p.y * height, p.z * width) for p in result.face_landmarks[0]]
                flags[i] = FACE_DETECTED
    finally:
        detector.close()
    return landmarks, flags


def load_clip(relative: str, n: int) -> list[np.ndarray]:
    from synctalk.io.media import read_frames

    return list(itertools.islice(read_frames(real_file(relative), fps=25), n))


@pytest.fixture(scope="module")
def segmenter():
    with PersonSegmenter() as seg:
        yield seg


@pytest.fixture(scope="module")
def may(segmenter):
    """The first 40 frames of may_5s_25fps.mp4 (512x512), their landmarks, and the label maps with the default
    temporal window (5) and without smoothing (1)."""
    frames = load_clip("video/may_5s_25fps.mp4", N_MAY)
    landmarks, flags = detect_landmarks(frames)
    assert flags.all(), "the Face Landmarker lost May's face"
    smoothed = list(parse_frames(iter(frames), landmarks, flags, segmenter=segmenter))
    raw = list(parse_frames(iter(frames), landmarks, flags, segmenter=segmenter, window=1))
    return {"frames": frames, "landmarks": landmarks, "flags": flags, "labels": smoothed, "labels_raw": raw}


def at(labels: np.ndarray, point) -> int:
    """Label at a continuous pixel position (x, y)."""
    return int(labels[int(point[1]), int(point[0])])


def face_height(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[10, :2] - pts[152, :2]))


def head_ious(label_maps: list[np.ndarray]) -> np.ndarray:
    heads = [np.isin(lab, HEAD_LABELS) for lab in label_maps]
    return np.array([(a & b).sum() / (a | b).sum() for a, b in itertools.pairwise(heads)])


# ---------------------------------------------------------------------------------------------------- helpers


def test_edges_to_paths_orders_loops_and_chains():
    assert edges_to_paths({(3, 1), (1, 2), (2, 3)}) == [[1, 2, 3]]                  # loop: smallest, smaller side
    assert edges_to_paths([(7, 5), (5, 9), (9, 8), (8, 7)]) == [[5, 7, 8, 9]]
    assert edges_to_paths([(5, 4), (4, 6)]) == [[5, 4, 6]]                         # chain: from its smaller end
    assert edges_to_paths([(10, 11), (1, 2), (2, 0), (0, 1)]) == [[0, 1, 2], [10, 11]]
    with pytest.raises(ValueError, match="vertex 0"):
        edges_to_paths([(0, 1), (0, 2), (0, 3)])                                   # a fork is not a path


def test_face_mesh_regions_from_mediapipe_edge_sets():
    regions = face_mesh_regions()
    assert len(regions.face_oval) == 36 and regions.face_oval[0] == 10
    assert len(regions.lips_outer) == 20 and {61, 291, 0, 17} <= set(regions.lips_outer)
    assert len(regions.lips_inner) == 20 and {78, 308, 13, 14} <= set(regions.lips_inner)
    assert [len(e) for e in regions.eyes] == [16, 16] and 33 in regions.eyes[0] and 263 in regions.eyes[1]
    assert [tuple(map(len, b)) for b in regions.brows] == [(5, 5), (5, 5)]
    assert regions.jaw[0] == 58 and regions.jaw[-1] == 288 and 152 in regions.jaw and len(regions.jaw) == 15


def test_fill_polygon_counts_pixels_by_covered_area():
    # Pixel (r, c) spans [c, c + 1) x [r, r + 1): the square [2, 6]^2 covers exactly rows/cols 2..5.
    square = fill_polygon((10, 10), np.array([[2, 2], [6, 2], [6, 6], [2, 6]], float))
    expected = np.zeros((10, 10), bool)
    expected[2:6, 2:6] = True
    assert (square == expected).all()
    # Edges a quarter pixel inside: border pixels are 75% (corners 56%) covered -> kept, still 16 pixels.
    assert fill_polygon((10, 10), np.array([[2.25, 2.25], [5.75, 2.25], [5.75, 5.75], [2.25, 5.75]])).sum() == 16
    # Vertical bands (no corners inside the image): edge columns 60% covered are in, 40% covered are out.
    band = fill_polygon((10, 10), np.array([[2.4, -1], [5.6, -1], [5.6, 11], [2.4, 11]]))
    assert band.sum() == 40 and band[:, 2:6].all()
    band = fill_polygon((10, 10), np.array([[2.6, -1], [5.4, -1], [5.4, 11], [2.6, 11]]))
    assert band.sum() == 20 and band[:, 3:5].all()
    # Edges 0.6 pixel inside: border pixels only 40% covered -> dropped, the 2x2 core remains.
    core = fill_polygon((10, 10), np.array([[2.6, 2.6], [5.4, 2.6], [5.4, 5.4], [2.6, 5.4]]))
    assert core.sum() == 4 and core[3:5, 3:5].all()
    # Clipped at the image border, and nothing for a polygon outside the image or a degenerate one.
    assert fill_polygon((10, 10), np.array([[-3, -3], [2, -3], [2, 2], [-3, 2]], float)).sum() == 4
    assert fill_polygon((10, 10), np.array([[20, 20], [30, 20], [30, 30]], float)).sum() == 0
    assert fill_polygon((10, 10), np.array([[1, 1], [5, 5]], float)).sum() == 0
    # Right triangle x >= 0.6, y >= 0.6, x + y <= 7.2. Row 0 / column 0: at most 40% covered -> out. Pixels with
    # r, c >= 1 and r + c <= 5 are inside; r + c == 6 are 1 - 0.8^2 / 2 = 68% covered -> in; r + c == 7: 2% -> out.
    triangle = fill_polygon((10, 10), np.array([[0.6, 0.6], [6.6, 0.6], [0.6, 6.6]]))
    rows, cols = np.mgrid[0:10, 0:10]
    assert (triangle == ((rows >= 1) & (cols >= 1) & (rows + cols <= 6))).all() and triangle.sum() == 15


def test_join_chains_closes_two_edges_without_crossing():
    # Upper edge left->right (0, 1, 2), lower edge also left->right (3, 4, 5): the polygon must walk the lower one
    # backwards.
    points = np.array([[0, 0], [5, -1], [10, 0], [0, 2], [5, 2], [10, 2]], float)
    assert join_chains(points, [0, 1, 2], [3, 4, 5]) == [0, 1, 2, 5, 4, 3]
    assert join_chains(points, [0, 1, 2], [5, 4, 3]) == [0, 1, 2, 5, 4, 3]


def test_face_frame_round_trip_and_axes():
    pts = np.zeros((478, 3), np.float32)
    regions = face_mesh_regions()
    pts[list(regions.eyes[0]), :2] = (40, 50)      # the subject's right eye: image left
    pts[list(regions.eyes[1]), :2] = (80, 50)
    pts[10, :2], pts[152, :2] = (60, 20), (60, 120)
    frame = FaceFrame.from_landmarks(pts)
    assert frame.size == pytest.approx(100) and np.allclose(frame.ex, (1, 0)) and np.allclose(frame.ey, (0, 1))
    assert np.allclose(frame.to_face(np.array([60.0, 120.0])), (0, 0.5))        # the chin
    xy = np.array([[3.0, 4.0], [100.0, 7.5]])
    assert np.allclose(frame.to_image(frame.to_face(xy)), xy)


_FRONTAL: dict[str, np.ndarray] = {}


def _frontal_landmarks() -> np.ndarray:
    """Real landmarks of May's first frame (cached): a frontal face, mouth a little open."""
    if "may0" not in _FRONTAL:
        landmarks, flags = detect_landmarks(load_clip("video/may_5s_25fps.mp4", 1))
        assert flags[0]
        _FRONTAL["may0"] = landmarks[0]
    return _FRONTAL["may0"]


def test_synthetic_scene_with_known_regions():
    """A drawn person (hair, face, neck, clothes in flat colours) around a real landmark set: every region is
    where it was drawn."""
    import cv2

    # May's face, scaled down and moved up so that her neck and shoulders fit in the frame.
    pts = _frontal_landmarks().copy()
    pts[:, :2] = (pts[:, :2] - pts[1, :2]) * 0.6 + (256, 190)
    size, (cx, chin_y), top_y = face_height(pts), pts[152, :2], pts[10, 1]
    height = width = 512
    rgb = np.full((height, width, 3), (70, 110, 90), np.uint8)                      # green-grey wall
    person = np.zeros((height, width), np.uint8)
    hair = np.zeros((height, width), np.uint8)
    cv2.ellipse(hair, (int(cx), int(top_y + 0.35 * size)), (int(0.65 * size), int(0.65 * size)), 0, 0, 360, 1, -1)
    hair[int(pts[58, 1]):] = 0                                                      # hair ends at the jaw ends
    neck_x0, neck_x1 = int(cx - 0.2 * size), int(cx + 0.2 * size)
    collar_y = int(chin_y + 0.45 * size)
    rgb[hair > 0] = (90, 60, 40)
    person |= hair
    oval = fill_polygon((height, width), pts[list(face_mesh_regions().face_oval), :2])
    rgb[oval] = (205, 150, 120)
    person[oval] = 1
    rgb[int(chin_y) - 20:collar_y, neck_x0:neck_x1] = (190, 138, 110)             # neck, a little darker
    person[int(chin_y) - 20:collar_y, neck_x0:neck_x1] = 1
    rgb[collar_y:, 40:width - 40] = (40, 50, 110)                                   # blue jacket
    person[collar_y:, 40:width - 40] = 1
    rgb[oval] = (205, 150, 120)                                                     # face on top of the neck

    labels = parse_frame(rgb, pts, person.astype(np.float32))

    assert (labels[person == 0] == L["background"]).all()
    above_forehead = (hair > 0) & (np.arange(height)[:, None] < top_y)
    assert np.isin(labels[above_forehead], HEAD_LABELS).mean() > 0.99             # hair is head
    neck_core = np.zeros((height, width), bool)
    neck_core[int(chin_y + 0.08 * size):collar_y - 2, neck_x0 + 2:neck_x1 - 2] = True
    assert (labels[neck_core] == L["neck"]).mean() > 0.97
    jacket = np.zeros((height, width), bool)
    jacket[collar_y + 2:, 40:width - 40] = True
    assert (labels[jacket] == L["torso"]).mean() > 0.99                           # clothes never neck
    assert np.isin(labels[oval], HEAD_LABELS).all()
    for eye in face_mesh_regions().eyes:
        assert at(labels, pts[list(eye), :2].mean(axis=0)) == L["eyes"]
    assert at(labels, (pts[13, :2] + pts[14, :2]) / 2) == L["mouth_interior"]
    assert at(labels, (pts[17, :2] + pts[14, :2]) / 2) == L["lips"]


# ---------------------------------------------------------------------------------------------------- real frames


def test_regions_are_where_they_belong(may):
    for i in (0, 13, 27, 39):
        labels, pts = may["labels"][i], may["landmarks"][i]
        h = face_height(pts)
        assert at(labels, pts[1]) == L["head"]                                      # nose tip
        assert at(labels, pts[205]) == L["head"] and at(labels, pts[425]) == L["head"]  # cheeks
        assert at(labels, pts[152, :2] + [0, -0.05 * h]) == L["head"]               # a little above the chin
        assert at(labels, pts[152, :2] + [0, 0.1 * h]) == L["neck"]                 # a little below the chin
        assert at(labels, (pts[105, :2] + pts[52, :2]) / 2) == L["brows"]           # middle of each brow
        assert at(labels, (pts[334, :2] + pts[282, :2]) / 2) == L["brows"]
        assert at(labels, (pts[17, :2] + pts[14, :2]) / 2) == L["lips"]             # lower lip
        assert at(labels, (pts[0, :2] + pts[13, :2]) / 2) == L["lips"]              # upper lip
        # Hair above the forehead, inside the silhouette, is head.
        person = labels != L["background"]
        hair = [pts[10, :2] - [0, k * h] for k in (0.05, 0.1, 0.2)]
        hair = [p for p in hair if p[1] >= 0 and person[int(p[1]), int(p[0])]]
        assert len(hair) >= 2 and all(at(labels, p) == L["head"] for p in hair)
        # Ears / hair beside the face at eye height are head, the wall beyond the hair is background.
        for side in (234, 454):
            beside = pts[side, :2] + np.sign(pts[side, 0] - pts[1, 0]) * np.array([0.1 * h, 0])
            assert at(labels, beside) == L["head"]
        assert labels[0, 0] == L["background"] and labels[0, -1] == L["background"]  # top corners: wall
        assert at(labels, (256, 505)) == L["neck"]          # bottom centre: May's neck reaches the frame's edge
        assert labels[-1, 40] == L["torso"] and labels[-1, -40] == L["torso"]       # jacket
        # Areas (measured over these frames: head 0.45-0.49, neck 0.04-0.05, background 0.31-0.33).
        assert 0.40 < np.isin(labels, HEAD_LABELS).mean() < 0.55
        assert 0.02 < (labels == L["neck"]).mean() < 0.08
        assert 0.25 < (labels == L["background"]).mean() < 0.40


def test_eyes_are_labelled_when_open(may):
    checked = 0
    for labels, pts in zip(may["labels"], may["landmarks"], strict=True):
        if pts[145, 1] - pts[159, 1] < 0.04 * face_height(pts):                    # blinking: no eye to label
            continue
        for eye, iris in zip(face_mesh_regions().eyes, (468, 473), strict=True):
            assert at(labels, pts[iris]) == L["eyes"]
            assert (labels[fill_polygon(labels.shape, pts[list(eye), :2])] == L["eyes"]).all()
        checked += 1
    assert checked > N_MAY // 2


def test_open_mouth_has_an_interior(may):
    gaps = np.array([pts[14, 1] - pts[13, 1] for pts in may["landmarks"]])
    i = int(np.argmax(gaps))
    assert gaps[i] > 15                                                             # measured 25.8 px
    pts, labels = may["landmarks"][i], may["labels"][i]
    assert at(labels, (pts[13, :2] + pts[14, :2]) / 2) == L["mouth_interior"]
    interior = (labels == L["mouth_interior"]).sum()
    assert interior > 0.5 * gaps[i] * np.linalg.norm(pts[78, :2] - pts[308, :2]) / 2  # a lens, not a sliver


def test_every_label_appears(may):
    present = set(np.unique(np.stack(may["labels"])))
    assert present == set(L.values())


def test_temporal_stability_and_smoothing_helps(may):
    smoothed, raw = may["labels"], may["labels_raw"]
    assert head_ious(smoothed).mean() > 0.97                                        # measured 0.986
    assert head_ious(smoothed).min() > 0.93

    def person_flicker(label_maps):
        return np.mean([((a > 0) ^ (b > 0)).mean() for a, b in itertools.pairwise(label_maps)])

    # Averaging the person probability over 5 frames cuts silhouette flicker (measured 0.63% vs 0.83% of the
    # pixels change from frame to frame).
    assert person_flicker(smoothed) < 0.9 * person_flicker(raw)
    assert person_flicker(smoothed) < 0.01
    # The wall far from the person never changes label.
    far = np.ones(smoothed[0].shape, bool)
    far[:, 12:-12] = False                          # May's hair swings to within 15 pixels of the left edge
    far[-140:] = False
    assert all((lab[far] == L["background"]).all() for lab in smoothed)


def test_rotation_equivariance(may, segmenter):
    """The geometry is face-aligned: rotating frame, landmarks and probability by 90 degrees rotates the labels."""
    rgb, pts = may["frames"][0], may["landmarks"][0]
    prob = segmenter(rgb)
    labels = parse_frame(rgb, pts, prob)
    width = rgb.shape[1]
    # np.rot90 (counter-clockwise) maps the continuous point (x, y) to (y, W - x).
    rotated_pts = pts.copy()
    rotated_pts[:, 0], rotated_pts[:, 1] = pts[:, 1], width - pts[:, 0]
    rotated = parse_frame(np.ascontiguousarray(np.rot90(rgb)), rotated_pts, np.ascontiguousarray(np.rot90(prob)))
    assert (rotated == np.rot90(labels)).mean() > 0.995


def test_no_face_means_no_face_labels(may, segmenter):
    rgb = may["frames"][5]
    prob = segmenter(rgb)
    labels = parse_frame(rgb, None, prob)
    assert set(np.unique(labels)) == {L["background"], L["torso"]}
    assert ((labels == L["torso"]) == (prob > 0.5)).all()                           # all of the person is torso
    nan = np.full((478, 3), np.nan, np.float32)
    assert (parse_frame(rgb, nan, prob) == labels).all()                            # invalid landmarks: same
    flags = may["flags"][:6].copy()
    flags[[1, 4]] = FACE_MISSING
    flags[2] = FACE_INTERPOLATED
    out = list(parse_frames(iter(may["frames"][:6]), may["landmarks"][:6], flags, segmenter=segmenter))
    assert len(out) == 6
    for i in (1, 4):
        assert set(np.unique(out[i])) <= {L["background"], L["torso"]}
    assert all(np.isin(out[i], HEAD_LABELS).mean() > 0.3 for i in (0, 2, 3, 5))   # interpolated counts as a face


def test_tight_crop_256(segmenter):
    """andrew: a 256x256 crop where the face fills the frame."""
    frames = load_clip("video/andrew_25s_30fps_silent.mp4", 12)
    landmarks, flags = detect_landmarks(frames)
    assert flags.all()
    out = list(parse_frames(iter(frames), landmarks, flags, segmenter=segmenter))
    for labels, pts in zip(out, landmarks, strict=True):
        assert labels.shape == (256, 256) and labels.dtype == np.uint8
        oval = fill_polygon(labels.shape, pts[list(face_mesh_regions().face_oval), :2])
        assert np.isin(labels[oval], HEAD_LABELS).all()                             # the whole face is head
        assert at(labels, pts[1]) == L["head"]
        assert at(labels, pts[152, :2] + [0, 0.1 * face_height(pts)]) == L["neck"]
        assert labels[0, 0] == L["background"] and labels[-1, 5] == L["torso"]      # wall, shirt
        # Measured: head 0.37-0.38 of the frame, neck 0.05-0.06.
        assert 0.30 < np.isin(labels, HEAD_LABELS).mean() < 0.46
        assert 0.02 < (labels == L["neck"]).mean() < 0.10


# ---------------------------------------------------------------------------------------------------- the stream


def test_parse_frames_streams_and_checks_lengths(may, segmenter):
    consumed = []

    def frames():
        for i, frame in enumerate(may["frames"][:12]):
            consumed.append(i)
            yield frame

    stream = parse_frames(frames(), may["landmarks"][:12], may["flags"][:12], segmenter=segmenter, window=5)
    first = next(stream)
    assert first.shape == (512, 512) and len(consumed) <= 5                         # window 5: 2 frames ahead + 1
    rest = list(stream)
    assert len(rest) == 11
    with pytest.raises(UserInputError, match=r"more frames than landmark sets \(12\)"):
        list(parse_frames(iter(may["frames"][:13]), may["landmarks"][:12], may["flags"][:12], segmenter=segmenter))
    with pytest.raises(UserInputError, match="3 frames but 12 landmark sets"):
        list(parse_frames(iter(may["frames"][:3]), may["landmarks"][:12], may["flags"][:12], segmenter=segmenter))
    with pytest.raises(UserInputError, match="face_flags"):
        list(parse_frames(iter(may["frames"][:3]), may["landmarks"][:3], may["flags"][:4], segmenter=segmenter))


def test_person_segmenter(may):
    rgb = may["frames"][0]
    with PersonSegmenter() as seg:
        prob = seg(rgb)
        assert prob.shape == (512, 512) and prob.dtype == np.float32
        assert 0.0 <= prob.min() and prob.max() <= 1.0
        assert prob[5, 5] < 0.1 and prob[int(may["landmarks"][0][1, 1]), int(may["landmarks"][0][1, 0])] > 0.9
        with pytest.raises(ValueError, match="RGB frame"):
            seg(rgb[..., 0])
    with pytest.raises(RuntimeError, match="closed"):
        seg(rgb)


def test_jaw_line_follows_the_jaw(may):
    pts = may["landmarks"][0]
    jaw = jaw_line(pts, 512)
    assert jaw.shape == (512,) and jaw.dtype == np.float32
    assert jaw[int(pts[152, 0])] == pytest.approx(pts[152, 1], abs=2.0)            # under the chin: the chin
    assert jaw[int(pts[58, 0])] == pytest.approx(pts[58, 1], abs=2.0)              # a jaw end
    assert jaw[5] > jaw[int(pts[58, 0])]                                           # falls outwards, over shoulders


# ---------------------------------------------------------------------------------------------------- registry


def test_parser_registry(may, segmenter, monkeypatch):
    assert make_parser() is parse_frame and make_parser("mediapipe") is parse_frame
    with pytest.raises(UserInputError, match=r"unknown parser 'bisenet' \(preprocess.parser\); available: mediapipe"):
        make_parser("bisenet")

    seen = []

    def constant_parser(rgb, landmarks, person_prob):
        seen.append((landmarks is None, person_prob.shape, person_prob.dtype))
        return np.full(rgb.shape[:2], L["torso"], np.uint8)

    monkeypatch.setitem(PARSERS, "constant", lambda: constant_parser)
    parser = make_parser("constant")
    flags = may["flags"][:3].copy()
    flags[1] = FACE_MISSING
    out = list(parse_frames(iter(may["frames"][:3]), may["landmarks"][:3], flags, segmenter=segmenter,
                            parser=parser))
    assert [int(o[0, 0]) for o in out] == [L["torso"]] * 3
    assert seen == [(False, (512, 512), np.float32), (True, (512, 512), np.float32), (False, (512, 512), np.float32)]
    with pytest.raises(UserInputError, match="available: constant, mediapipe"):
        make_parser("nope")
