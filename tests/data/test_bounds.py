"""The head box measured from the subject (synctalk/data/bounds.py): a visual hull of the head masks, and the
check that no frame's head mask touches the box's outline."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk.data import SubjectDataset, SubjectWriter
from synctalk.data.bounds import box_clearance, box_silhouette, drop_specks, head_box, head_mask
from synctalk.errors import DatasetError

OLD_BOX = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)  # the fixed default box before measured boxes (HeadFieldConfig.aabb)


def orbit_c2w(yaw_deg: float, pitch_deg: float, distance: float = 6.0) -> np.ndarray:
    """Camera-to-world [4, 4] (OpenCV axes) on a sphere around the origin, looking at it; yaw = pitch = 0 is the
    frontal camera at (0, 0, -distance)."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    c2w = np.eye(4)
    c2w[:3, :3] = ry @ rx
    c2w[:3, 3] = -distance * c2w[:3, 2]
    return c2w


def ellipsoid_mask(c2w: np.ndarray, K: np.ndarray, size: int, centre, axes) -> np.ndarray:
    """Exact silhouette [size, size] bool of an ellipsoid: pixels whose ray through the pixel centre hits it."""
    v, u = np.mgrid[0:size, 0:size] + 0.5
    dirs = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ c2w[:3, :3].T
    o = (c2w[:3, 3] - np.asarray(centre)) / np.asarray(axes)
    d = dirs / np.asarray(axes)
    a, b, c = (d * d).sum(-1), 2 * (d * o).sum(-1), (o * o).sum() - 1
    return b * b - 4 * a * c >= 0


def write_views(root, cameras, K, size, masks, face_flags=None) -> SubjectDataset:
    """A subject whose parsing is `masks` (head label 1) seen from `cameras` [N, 4, 4] with intrinsics K."""
    n = len(cameras)
    writer = SubjectWriter(root)
    writer.init_meta(n, 25.0, size, size, 16000)
    for i, mask in enumerate(masks):
        writer.write_frame("parsing", i, mask.astype(np.uint8))
    writer.mark_step("parsing")
    flags = np.ones(n) if face_flags is None else face_flags
    writer.save_array("landmarks.npy", np.zeros((n, 478, 3)))
    writer.save_array("face_flags.npy", flags)
    writer.save_array("blendshapes.npy", np.zeros((n, 52)))
    writer.save_array("face_transforms.npy", np.tile(np.eye(4), (n, 1, 1)))
    writer.mark_step("landmarks")
    writer.save_array("poses.npy", cameras)
    writer.save_array("poses_raw.npy", cameras)
    writer.save_array("pose_errors.npy", np.zeros((n, 2)))
    writer.write_json("intrinsics.json", {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2],
                                          "width": size, "height": size})
    writer.mark_step("pose")
    return SubjectDataset(root, require=("parsing", "pose", "landmarks"))


SIZE = 128
K_SYN = np.array([[384.0, 0, 64], [0, 384.0, 64], [0, 0, 1]])  # a 1.4-unit head at distance 6 spans ~90 px
CENTRE, AXES = (0.05, -0.15, 0.2), (0.7, 0.85, 0.65)
TRUE_BOX = np.array([*(np.subtract(CENTRE, AXES)), *(np.add(CENTRE, AXES))])


def test_head_box_recovers_an_ellipsoid_seen_all_around(tmp_path):
    # 13 yaws from -90 to 90 degrees x 3 pitches: the hull is about the ellipsoid's circumscribed polyhedron.
    # Error budget per side with every mask counted (min_fraction=1), outward: one grid step (0.052 units: the
    # surface lies up to a step beyond the last kept point) + mask dilation and pixel lookup (2 px = 0.03 units at
    # distance 6) + the perspective cones' widening (1 %) + 15-degree view spacing (< 1 %) < 0.1; inward only
    # the pixel sampling of the silhouette (half a pixel, 0.008 units).
    cameras = np.stack([orbit_c2w(yaw, pitch) for yaw in range(-90, 91, 15) for pitch in (-30, 0, 30)])
    masks = [ellipsoid_mask(c2w, K_SYN, SIZE, CENTRE, AXES) for c2w in cameras]
    ds = write_views(tmp_path / "ellipsoid", cameras, K_SYN, SIZE, masks)

    strict = np.array(head_box(ds, margin=0.0, min_fraction=1.0))
    outward = np.concatenate([TRUE_BOX[:3] - strict[:3], strict[3:] - TRUE_BOX[3:]])
    assert outward.min() > -0.01 and outward.max() < 0.1, (strict.round(3), TRUE_BOX)
    # The default vote keeps points outside up to 10 % of the masks (3 of 39 here): only ever larger, and at the
    # top (seen tightly by few views) by up to another grid step.
    box = np.array(head_box(ds, margin=0.0))
    assert (box[:3] <= strict[:3]).all() and (box[3:] >= strict[3:]).all()
    outward = np.concatenate([TRUE_BOX[:3] - box[:3], box[3:] - TRUE_BOX[3:]])
    assert outward.max() < 0.15, (box.round(3), TRUE_BOX)

    grown = np.array(head_box(ds, margin=0.1))
    size = box[3:] - box[:3]
    np.testing.assert_allclose(grown, np.concatenate([box[:3] - 0.1 * size, box[3:] + 0.1 * size]), atol=1e-9)
    clearance = box_clearance(ds, grown)
    assert clearance.shape == (len(cameras),) and (clearance > 0).all()


def test_hair_leaving_the_image_top_extends_the_box(tmp_path):
    # Near-frontal views (as in real clips), the principal point moved up so that the head's top leaves the image
    # by about 10 px in every view. The mask continues past the border: the box must reach the true top; with the
    # border handling off (border_pad=0) it stops at the image edge.
    K = K_SYN.copy()
    K[1, 2] = 45.0
    cameras = np.stack([orbit_c2w(yaw, pitch) for yaw in (-20, -10, 0, 10, 20) for pitch in (-5, 0, 5)])
    masks = [ellipsoid_mask(c2w, K, SIZE, CENTRE, AXES) for c2w in cameras]
    assert all(mask[0].any() for mask in masks)  # the head touches the image top in every frame
    ds = write_views(tmp_path / "cut", cameras, K, SIZE, masks)

    top = head_box(ds, margin=0.0)[1]
    assert top <= TRUE_BOX[1] + 0.01, (top, TRUE_BOX[1])
    cut_top = head_box(ds, margin=0.0, border_pad=0.0)[1]
    assert cut_top > TRUE_BOX[1] + 0.1, (cut_top, TRUE_BOX[1])
    box = head_box(ds)
    assert (box_clearance(ds, box) > 0).all() and (box_clearance(ds, box, depth=CENTRE[2]) > 0).all()
    for c2w in cameras:  # the box's outline leaves the image at the top, it does not cut the head at the edge
        assert box_silhouette(box, c2w, K)[:, 1].min() < -5


def test_frames_without_a_face_are_ignored(tmp_path):
    cameras = np.stack([orbit_c2w(yaw, 0) for yaw in range(-90, 91, 15)])
    masks = [ellipsoid_mask(c2w, K_SYN, SIZE, CENTRE, AXES) for c2w in cameras]
    flags = np.ones(len(cameras))
    flags[[2, 5]] = 0  # no face: their masks are empty (would carve everything away if used)
    for i in (2, 5, 7):  # frame 7: face flagged, but parsing found no head
        masks[i] = np.zeros_like(masks[i])
    ds = write_views(tmp_path / "gaps", cameras, K_SYN, SIZE, masks, flags)
    box = head_box(ds, margin=0.0)
    assert box[0] < TRUE_BOX[0] + 0.01 and box[4] > TRUE_BOX[4] - 0.01
    clearance = box_clearance(ds, box, frames=range(len(cameras)))
    assert np.isinf(clearance[[2, 5, 7]]).all() and (clearance[[0, 1, 3, 4, 6, 8]] > 0).all()
    assert len(box_clearance(ds, box)) == len(cameras) - 2  # default: frames with a face


def test_disagreeing_views_and_missing_heads_fail_clearly(tmp_path):
    cameras = np.stack([orbit_c2w(0, 0)] * 10)
    left, right = np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE), bool)
    left[40:80, 10:40] = True
    right[40:80, 90:120] = True  # the same camera sees the head in two places: poses and masks disagree
    ds = write_views(tmp_path / "disagree", cameras, K_SYN, SIZE, [left] * 5 + [right] * 5)
    with pytest.raises(DatasetError, match=r"disagree.*--force pose") as info:
        head_box(ds)
    assert str(ds.root) in str(info.value)

    empty = write_views(tmp_path / "empty", cameras, K_SYN, SIZE, [np.zeros((SIZE, SIZE), bool)] * 10)
    with pytest.raises(DatasetError, match=r"have a head in parsing/"):
        head_box(empty)


def test_clearance_is_signed_pixels_to_the_box_outline(tmp_path):
    # Frontal camera at distance 5, f = 100, 100 x 100 image: the unit box's front face (distance 4) spans
    # pixels 25..75, its mid-plane (distance 5) 30..70.
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    c2w = orbit_c2w(0, 0, distance=5.0)
    inside = np.zeros((100, 100), bool)
    inside[40:60, 40:60] = True   # pixel centres 40.5 .. 59.5
    poking = inside.copy()
    poking[50, 60:81] = True     # an arm reaching 5.5 px right of the front face's outline (80.5 - 75)
    poking[20, 20:60] = True     # joined to nothing, but 40 px: not a speck
    ds = write_views(tmp_path / "square", np.stack([c2w, c2w]), K, 100, [inside, poking])
    clearance = box_clearance(ds, OLD_BOX)
    np.testing.assert_allclose(clearance[0], 40.5 - 25.0, atol=1e-6)
    np.testing.assert_allclose(clearance[1], -5.5, atol=1e-6)
    np.testing.assert_allclose(box_clearance(ds, OLD_BOX, frames=[0], depth=0.0), [40.5 - 30.0], atol=1e-6)
    assert box_clearance(ds, OLD_BOX, frames=[0], depth=2.0)[0] == -np.inf  # the box does not reach z = 2
    assert box_silhouette(OLD_BOX, orbit_c2w(0, 0, distance=0.5), K) is None  # camera inside: covers the view


def test_specks_of_head_label_are_dropped():
    mask = np.zeros((60, 60), bool)
    mask[5:45, 10:50] = True       # the head
    mask[40:58, 28:32] = False     # a notch: still one part
    mask[55:58, 2:6] = True        # 12 px on the clothes: a parsing error
    cleaned = drop_specks(mask)
    assert not cleaned[55:58, 2:6].any() and (cleaned == mask)[:50].all()
    hair = mask.copy()
    hair[50:58, 40:58] = True      # 144 px, separate but large (a lock of hair): kept
    assert drop_specks(hair)[50:58, 40:58].all()


def test_may_clip_head_stays_inside_the_measured_box(may_subject):
    _, root, _ = may_subject
    ds = SubjectDataset(root, require=("pose", "parsing"))
    box = head_box(ds)
    clearance = box_clearance(ds, box)
    at_head_depth = box_clearance(ds, box, depth=0.0)
    old = box_clearance(ds, OLD_BOX)
    old_at_head_depth = box_clearance(ds, OLD_BOX, depth=0.0)
    print(f"May {len(ds)} frames: head_box {np.round(box, 2).tolist()}; clearance min {clearance.min():.1f} px "
          f"(at z=0: {at_head_depth.min():.1f}); old box [-1, 1]^3: {(old <= 0).sum()} frames outside, min "
          f"{old.min():.1f} px (at z=0: {(old_at_head_depth <= 0).sum()} outside, min {old_at_head_depth.min():.1f})")
    assert len(clearance) == len(ds) and (clearance > 0).all() and (at_head_depth > 0).all()
    # The old box covers May's head mask through its big front face, but at the head's own depth the hair sticks
    # out of its top in every frame: the field has to put that hair in front of the face.
    assert (old > 0).all() and (old_at_head_depth < 0).all()
    assert box[1] < -1.0  # the measured box reaches above the old one's top
    assert head_mask(ds, 0).sum() > 0.2 * ds.width * ds.height
