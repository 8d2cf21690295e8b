"""The head's world box measured from the subject: a visual hull of the head masks, and a check of a box.

    box = head_box(ds)                       # (xmin, ymin, zmin, xmax, ymax, zmax), world units
    clearance = box_clearance(ds, box)       # [F] pixels between each frame's head mask and the box's outline

`head_box` carves a grid of points in a generous cube: a point stays when it projects inside the (dilated)
head mask (parsing labels HEAD_LABELS) of enough frames, each frame with its own pose and the intrinsics. A mask
that touches the image border is continued past it (edge replication over `border_pad` of the image), so hair
leaving the top of the frame widens the box instead of being cut by it. Near-frontal views cannot carve along
the viewing direction (the hull is then a cone that widens with depth), so the sides are measured on the hull's
part in front of RIM_Z and the depth range is the face convention of docs/dataset.md (nothing in front of the
nose tip at z = NOSE_TIP_Z) plus a head length, unless the views carve it tighter. Finally the box grows by
`margin` of its size on every side.

`box_clearance` checks a box against every frame's head mask in the image: against the box's whole outline, or
(`depth=`) against the outline of its cross-section at one world depth. The whole outline covers the mask as soon
as the box's front face does, even when the head, at its real depth, sticks out of the box (the field must then
put the hair in front of the face); `depth=0` (the plane through the origin, inside the head) catches that.

Numpy only; cost: a few seconds for 60 frames at 512².
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from synctalk.data.contract import FACE_MISSING, HEAD_LABELS
from synctalk.data.subject import SubjectDataset, repair_hint
from synctalk.errors import DatasetError

__all__ = ["HEAD_BREADTH", "HEAD_LENGTH", "NOSE_TIP_Z", "RIM_Z", "box_clearance", "box_silhouette", "drop_specks",
           "head_box", "head_mask", "project_points", "sample_frames"]

log = logging.getLogger(__name__)

# World convention (docs/dataset.md): the origin is about 7.5 cm (0.5 units of 15 cm) behind the nose tip, z into
# the face; nothing of the head is in front of the nose tip.
NOSE_TIP_Z = -0.5
# Anthropometric priors in world units (the pose fit scales every face to the canonical one): nose tip to the back of
# the skull about 20 cm, skull breadth about 15 cm; a head's outline (ears, the sides and top of the hair) lies in
# front of z = RIM_Z (7.5 cm behind the origin).
HEAD_LENGTH = 1.35
HEAD_BREADTH = 1.0
RIM_Z = 0.5
SPECK_FRACTION = 0.02  # head-mask parts smaller than this fraction of the largest are parsing errors
MIN_MASK_PIXELS = 16  # a frame whose head mask is smaller than this says nothing (no face, bad parsing)


def head_mask(ds: SubjectDataset, index: int) -> np.ndarray:
    """The head region (hair, face, ears, lips, mouth, eyes, brows) of frame `index`: [H, W] bool, without
    specks (parts smaller than SPECK_FRACTION of the largest connected part: parsing errors on the clothes)."""
    return drop_specks(np.isin(ds.parsing(index), HEAD_LABELS))


def drop_specks(mask: np.ndarray, fraction: float | None = None) -> np.ndarray:
    """`mask` [H, W] bool without its 4-connected parts smaller than `fraction` (default SPECK_FRACTION) of the
    largest one. Union-find over the runs of each row."""
    fraction = SPECK_FRACTION if fraction is None else fraction
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    rows, starts = np.nonzero(np.diff(padded, axis=1) == 1)
    _, ends = np.nonzero(np.diff(padded, axis=1) == -1)  # runs are [start, end) per row, in row-major order
    if len(rows) < 2:
        return mask
    parent = np.arange(len(rows))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for r in range(1, mask.shape[0]):
        a, a_end, b_end = row_first[r - 1], row_first[r], row_first[r + 1]
        b = a_end
        while a < a_end and b < b_end:  # two sorted run lists: link overlapping runs
            if starts[a] < ends[b] and starts[b] < ends[a]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1
    labels = np.array([root(k) for k in range(len(rows))])
    sizes = np.bincount(labels, weights=ends - starts)
    keep = sizes[labels] >= fraction * sizes.max()
    if keep.all():
        return mask
    out = np.zeros_like(mask)
    for r, start, end in zip(rows[keep], starts[keep], ends[keep], strict=True):
        out[r, start:end] = True
    return out


def sample_frames(ds: SubjectDataset, frames: Sequence[int] | None = None, max_frames: int | None = 60) -> list[int]:
    """Frames to measure: `frames`, else the train split (all frames before splits exist), without frames that
    have no face, thinned evenly to at most `max_frames` (None: all)."""
    if frames is None:
        frames = ds.split("train") if "splits" in ds.steps else range(ds.n_frames)
    chosen = [int(i) for i in frames]
    if "landmarks" in ds.steps:
        flags = ds.face_flags
        chosen = [i for i in chosen if flags[i] != FACE_MISSING]
    if max_frames is not None and len(chosen) > max_frames:
        picks = np.linspace(0, len(chosen) - 1, max_frames).round().astype(int)
        chosen = [chosen[k] for k in picks]
    return chosen


def _require_pose(ds: SubjectDataset) -> None:
    for step in ("pose", "parsing"):
        if step not in ds.steps:
            raise DatasetError(f"{ds.root}: the head box needs step '{step}' (not done); {repair_hint(ds.root)}")


def project_points(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points [M, 3] → image coordinates u [M], v [M] (continuous, origin at the top-left corner) and camera
    depth z [M] (OpenCV axes, z forward)."""
    rotation, centre = c2w[:3, :3], c2w[:3, 3]
    cam = (points - centre) @ rotation  # = R^T (p - c) per row
    z = cam[:, 2]
    safe = np.where(z > 1e-6, z, 1e-6)
    return K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2], z


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1)² square."""
    if radius <= 0:
        return mask
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            head = [slice(None)] * 2
            tail = [slice(None)] * 2
            head[axis], tail[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(head)] |= out[tuple(tail)]
            grown[tuple(tail)] |= out[tuple(head)]
        out = grown
    return out


def head_box(ds: SubjectDataset, frames: Sequence[int] | None = None, margin: float = 0.1, *,
             max_frames: int = 60, extent: float = 2.5, resolution: int = 96, dilate: float = 0.01,
             border_pad: float = 0.15, min_fraction: float = 0.9) -> tuple[float, float, float, float, float, float]:
    """The head's world box (xmin, ymin, zmin, xmax, ymax, zmax) in world units, measured from the subject.

    Args:
        ds: a subject with the pose and parsing steps done.
        frames: frames to measure (default: the train split without frames that have no face), thinned evenly to
            `max_frames`.
        margin: growth per side as a fraction of the measured size on that axis.
        extent: the carved cube is [-extent, extent]³ world units (the head is near the origin, about [-1, 1]³).
        resolution: grid points per axis of that cube (96: one point every 0.05 units = 8 mm).
        dilate: the head mask is dilated by this fraction of the image side (pose and parsing error).
        border_pad: a mask touching the image border continues past it over this fraction of the image side.
        min_fraction: a point stays when it is inside the head mask in at least this fraction of the frames
            (tolerates masks that miss part of the head in a few frames; it can only make the box larger).

    Raises DatasetError when no frame has a head mask or when nothing survives (poses and masks disagree).
    """
    _require_pose(ds)
    chosen = sample_frames(ds, frames, max_frames)
    K = ds.intrinsics
    poses = ds.poses
    height, width = ds.height, ds.width
    radius = int(round(dilate * max(height, width)))
    pad = int(round(border_pad * max(height, width)))
    masks, cams = [], []
    for index in chosen:
        mask = head_mask(ds, index)
        if mask.sum() < MIN_MASK_PIXELS:
            continue
        masks.append(np.pad(_dilate(mask, radius), pad, mode="edge"))  # [H + 2 pad, W + 2 pad]
        cams.append(np.asarray(poses[index], np.float64))
    if len(masks) < 2:
        raise DatasetError(f"{ds.root}: only {len(masks)} of the {len(chosen)} frames measured for the head box have "
                           f"a head in parsing/ (labels {HEAD_LABELS}); check {ds.root / 'qa'} and "
                           f"{repair_hint(ds.root, 'parsing')}")

    step = 2.0 * extent / resolution
    axis = -extent + step * (np.arange(resolution) + 0.5)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)  # [R³, 3]
    misses = np.zeros(len(points), np.int32)
    allowed = int(np.floor((1.0 - min_fraction) * len(masks) + 1e-9))
    for mask, c2w in zip(masks, cams, strict=True):
        u, v, z = project_points(points, c2w, K)
        col = np.floor(u).astype(np.int64) + pad
        row = np.floor(v).astype(np.int64) + pad
        inside = (z > 1e-6) & (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
        hit = np.zeros(len(points), bool)
        hit[inside] = mask[row[inside], col[inside]]
        misses += ~hit
        keep = misses <= allowed
        points, misses = points[keep], misses[keep]
        if not len(points):
            break
    if not len(points):
        raise DatasetError(
            f"{ds.root}: no point of [-{extent:g}, {extent:g}]³ projects into the head mask of enough frames "
            f"({len(masks)} measured): poses.npy, intrinsics.json and parsing/ disagree. Look at {ds.root / 'qa'} "
            f"(head axes, parsing) and {repair_hint(ds.root, 'pose')}")

    # Near-frontal views hardly carve along z: the hull is a cone that widens with depth. The sides come from its
    # part in front of RIM_Z (where a head's outline lies; the back of a head is narrower than that), the depth
    # range from the face convention, bounded by the hull where the views do carve it.
    rim = points[points[:, 2] <= RIM_Z]
    if not len(rim):
        raise DatasetError(f"{ds.root}: the head's visual hull lies entirely behind z = {RIM_Z} (the head is near "
                           f"the origin, nose tip at z = {NOSE_TIP_Z}): poses.npy is off; check {ds.root / 'qa'} "
                           f"and {repair_hint(ds.root, 'pose')}")
    # The surface lies between the last kept grid point and the first carved one: up to a grid step further out.
    lo, hi = rim.min(0) - step, rim.max(0) + step
    width = hi[0] - lo[0]
    front = NOSE_TIP_Z
    back = NOSE_TIP_Z + HEAD_LENGTH + max(0.0, width - HEAD_BREADTH) / 2  # hair as thick behind as at the sides
    lo[2] = max(front, points[:, 2].min() - step)
    hi[2] = min(back, points[:, 2].max() + step)
    if hi[2] <= lo[2]:
        lo[2], hi[2] = front, back
    touching = [name for k, name in enumerate("xy") if lo[k] <= -extent + step or hi[k] >= extent - step]
    if touching:
        log.warning("%s: the head's visual hull reaches the edge of the carved cube [-%g, %g]³ along %s; the head "
                    "box may be too small there (poses or parsing off?)", ds.root, extent, extent, ", ".join(touching))
    size = hi - lo
    lo, hi = lo - margin * size, hi + margin * size
    return tuple(float(x) for x in (*lo, *hi))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise (in x right, y down axes: clockwise on screen) convex hull of [P, 2] points (monotone
    chain): [Q, 2]."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


_CORNER_BITS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)])
_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]  # 12 box edges


def box_silhouette(box: Sequence[float], c2w: np.ndarray, K: np.ndarray, depth: float | None = None,
                   near: float = 1e-3) -> np.ndarray | None:
    """The box's outline in the image: a convex polygon [Q, 2] (u, v pixels, continuous), or None when the camera
    is inside the box (the box covers the whole view). `depth`: the outline of the box's cross-section at world
    z = depth instead (an empty polygon when the box does not reach that depth). Parts of the box behind the camera
    are clipped at camera depth `near` (the outline then reaches far outside the image)."""
    box = np.asarray(box, np.float64)
    c2w = np.asarray(c2w, np.float64)
    centre = c2w[:3, 3]
    if depth is not None:
        if not box[2] <= depth <= box[5]:
            return np.zeros((0, 2))
        box = np.array([box[0], box[1], depth, box[3], box[4], depth])
    elif np.all(centre > box[:3]) and np.all(centre < box[3:]):
        return None
    corners = np.where(_CORNER_BITS, box[3:], box[:3])  # [8, 3]
    cam = (corners - centre) @ c2w[:3, :3]  # [8, 3] camera coordinates
    keep = [cam[k] for k in range(8) if cam[k, 2] > near]
    for a, b in _EDGES:  # where an edge crosses the near plane
        za, zb = cam[a, 2], cam[b, 2]
        if (za > near) != (zb > near):
            t = (near - za) / (zb - za)
            keep.append(cam[a] + t * (cam[b] - cam[a]))
    if not keep:
        return np.zeros((0, 2))
    pts = np.array(keep)
    uv = np.stack([K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2], K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]], -1)
    return _convex_hull(uv)


def _signed_clearance(mask: np.ndarray, polygon: np.ndarray | None) -> float:
    """Smallest signed distance (px) of the mask's pixel centres to the polygon's edges: positive when all are
    inside (the gap to the nearest edge), negative when some are outside (how far past an edge line)."""
    if polygon is None:
        return float("inf")
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return float("inf")
    if len(polygon) < 3:
        return float("-inf")
    px = np.stack([cols + 0.5, rows + 0.5], -1)  # [P, 2] pixel centres
    start, end = polygon, np.roll(polygon, -1, axis=0)
    edge = end - start
    # Inward normal: the hull is counter-clockwise in (u, v) coordinates (a left turn), so inside is to the left.
    normal = np.stack([-edge[:, 1], edge[:, 0]], -1) / np.linalg.norm(edge, axis=1, keepdims=True)
    offsets = (normal * start).sum(1)  # [E]
    distances = px @ normal.T - offsets  # [P, E], positive inside
    return float(distances.min(1).min())


def box_clearance(ds: SubjectDataset, box: Sequence[float], frames: Sequence[int] | None = None,
                  depth: float | None = None) -> np.ndarray:
    """Per frame, the smallest distance in pixels between the head mask and the edge of the box's projected
    outline: positive when the mask is inside with room to spare, negative when the mask pokes outside (then
    its magnitude is how far past the nearest edge line). [F] float64 for `frames` (default: every frame that
    has a face); inf for frames without a head mask or whose camera is inside the box.

    `depth`: measure against the outline of the box's cross-section at world z = depth (e.g. 0, inside the
    head) instead of the whole box; -inf when the box does not reach that depth. Meant for near-frontal views
    (talking-head clips): a side view sees that cross-section edge-on."""
    _require_pose(ds)
    chosen = sample_frames(ds, range(ds.n_frames), None) if frames is None else [int(i) for i in frames]
    K = ds.intrinsics
    poses = ds.poses
    return np.array([_signed_clearance(head_mask(ds, i), box_silhouette(box, poses[i], K, depth)) for i in chosen],
                    np.float64)
