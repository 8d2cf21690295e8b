"""Parsing masks: region placement on real frames, temporal stability, no-face frames, parser registry."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.parsing import make_parser, parse_frame, parse_frames
from synctalk.data import SubjectDataset
from synctalk.data.contract import PARSING_LABELS
from synctalk.errors import UserInputError

L = PARSING_LABELS


@pytest.fixture(scope="module")
def may(may_subject):
    _, root, _ = may_subject
    return SubjectDataset(root, require=("frames", "landmarks", "parsing"))


def at(labels, point):
    return int(labels[int(point[1]), int(point[0])])


def test_regions_are_where_they_belong(may):
    for i in (10, 60, 110):
        labels, pts = may.parsing(i), may.landmarks[i, :, :2]
        face_h = pts[152, 1] - pts[10, 1]
        assert at(labels, pts[1]) == L["head"]                                  # nose tip
        assert at(labels, pts[205]) == L["head"]                                # cheek
        assert at(labels, (pts[468] if len(pts) > 468 else pts[159])) == L["eyes"]  # iris centre
        assert at(labels, (pts[105] + pts[52]) / 2) == L["brows"]                 # middle of a brow
        assert at(labels, pts[17]) == L["lips"]                                 # lower lip, outer edge
        assert at(labels, pts[152] - [0, 0.08 * face_h]) == L["head"]           # just above the chin
        assert at(labels, pts[152] + [0, 0.12 * face_h]) == L["neck"]           # just below the chin
        assert at(labels, pts[10] - [0, 0.1 * face_h]) == L["head"]             # hair above the forehead
        assert labels[2, 2] == L["background"] and labels[2, -3] == L["background"]
        assert labels[-2, 60] == L["torso"]                                     # shoulder
        head = np.isin(labels, (1, 4, 5, 6, 7)).mean()
        assert 0.25 < head < 0.5                                                # measured ~0.36


def test_open_mouth_has_an_interior(may):
    gaps = may.landmarks[:, 14, 1] - may.landmarks[:, 13, 1]
    i = int(np.argmax(gaps))
    assert gaps[i] > 8
    centre = (may.landmarks[i, 13, :2] + may.landmarks[i, 14, :2]) / 2
    assert at(may.parsing(i), centre) == L["mouth_interior"]


def test_temporal_stability(may):
    """Consecutive head masks overlap almost completely, and the 3-frame probability average helps."""
    frames = [may.image(i) for i in range(40)]

    def head_ious(window):
        masks = [np.isin(lab, (1, 4, 5, 6, 7)) for lab in parse_frames(iter(frames), may.landmarks, may.face_flags,
                                                                        window=window)]
        return np.array([(a & b).sum() / (a | b).sum() for a, b in zip(masks, masks[1:], strict=False)])

    def person_flicker(window):
        masks = [lab != 0 for lab in parse_frames(iter(frames), may.landmarks, may.face_flags, window=window)]
        return np.mean([(a ^ b).mean() for a, b in zip(masks, masks[1:], strict=False)])

    assert head_ious(3).mean() > 0.95
    assert person_flicker(3) < person_flicker(1)


def test_no_face_frames_have_no_face_labels(may):
    labels = parse_frame(may.image(5), None, np.ones((512, 512), np.float32))
    assert set(np.unique(labels)) == {L["torso"]}
    flags = np.zeros(len(may), np.uint8)
    out = list(parse_frames((may.image(i) for i in range(3)), may.landmarks, flags))
    assert len(out) == 3 and all(not np.isin(lab, (1, 2, 4, 5, 6, 7)).any() for lab in out)


def test_parser_registry():
    assert make_parser("mediapipe") is parse_frame
    with pytest.raises(UserInputError, match="unknown parser 'bisenet'.*available: mediapipe"):
        make_parser("bisenet")
