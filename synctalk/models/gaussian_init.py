"""Where a Gaussian head starts: points on the subject's face, its head's silhouette and inside its mouth.

    seeds = seed_points(ds, box, count=20000, mouth_count=1500, face=load_canonical_face())

- **face**: area-uniform samples of the canonical face mesh (MediaPipe's, scaled per axis like the subject's pose
  fit, ``meta.json`` ``pose.model_scale_xyz``), the shape near-frontal views cannot carve;
- **silhouette**: the surface of the head masks' visual hull across training poses (hair, ears, top of the neck),
  without the hull's part in front of the face (frontal views leave a cone there that the mesh replaces);
- **mouth**: an ellipsoid behind the inner lips (teeth, tongue, cavity), coloured like the mouth interior.

Colours are each point's median colour over the frames where it projects inside the head mask. Without the face
mesh (no Face Landmarker bundle) the head is seeded from the hull alone and the mouth from the lips' landmarks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from synctalk.data.bounds import NOSE_TIP_Z, head_mask, project_points, sample_frames
from synctalk.data.contract import PARSING_LABELS

__all__ = ["INNER_LIPS", "SeedPoints", "seed_points", "nearest_spacing"]

log = logging.getLogger(__name__)

INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
"""MediaPipe mesh indices of the inner lip contour (corners 78 and 308, centres 13 and 14)."""
MOUTH_DEPTH = 0.12       # world units (1.8 cm) from the inner lips back to the centre of the mouth seeds
MOUTH_RADII = (0.42, 0.18, 0.10)   # fractions of the mouth width (x), world units (y, z)
FACE_FRACTION = 0.35     # of the head seeds on the face mesh
DEFAULT_MOUTH_RGB = (0.35, 0.12, 0.12)


@dataclass
class SeedPoints:
    head: np.ndarray        # [N, 3] world units
    head_rgb: np.ndarray    # [N, 3] in [0, 1]
    mouth: np.ndarray       # [M, 3]
    mouth_rgb: np.ndarray   # [M, 3]


def nearest_spacing(points: np.ndarray, k: int = 3) -> np.ndarray:
    """[N] mean distance of each point to its ``k`` nearest neighbours (the usual initial Gaussian size)."""
    from scipy.spatial import cKDTree

    if len(points) <= k:
        return np.full(len(points), 0.05)
    distances, _ = cKDTree(points).query(points, k + 1)
    return np.maximum(distances[:, 1:].mean(1), 1e-4)


def _surface_samples(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    picked = rng.choice(len(triangles), n, p=area / area.sum())
    u, v = rng.random((2, n))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    return a[picked] + u[:, None] * (b[picked] - a[picked]) + v[:, None] * (c[picked] - a[picked])


def _hull_surface(masks, cams, K, box, resolution: int, min_fraction: float = 0.9) -> tuple[np.ndarray, float]:
    """Grid points of the box on the surface of the masks' visual hull (kept, with a carved 6-neighbour) and the
    grid step. A projection outside the image is no evidence either way."""
    lo, hi = np.asarray(box[:3]), np.asarray(box[3:])
    step = float((hi - lo).max()) / resolution
    shape = np.maximum(np.ceil((hi - lo) / step).astype(int), 1)
    axes = [lo[k] + step * (np.arange(shape[k]) + 0.5) for k in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    misses = np.zeros(len(points), np.int32)
    seen = np.zeros(len(points), np.int32)
    for mask, c2w in zip(masks, cams, strict=True):
        u, v, z = project_points(points, c2w, K)
        col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        inside = (z > 1e-6) & (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
        hit = np.zeros(len(points), bool)
        hit[inside] = mask[row[inside], col[inside]]
        seen += inside
        misses += inside & ~hit
    kept = (misses <= np.floor((1 - min_fraction) * np.maximum(seen, 1))) & (seen > 0)
    grid = kept.reshape(shape)
    padded = np.pad(grid, 1)
    interior = grid.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]
    return points[(grid & ~interior).reshape(-1)], step


def _median_colours(points: np.ndarray, images, masks, cams, K, fallback) -> np.ndarray:
    colours = np.full((len(points), len(images), 3), np.nan)
    for k, (image, mask, c2w) in enumerate(zip(images, masks, cams, strict=True)):
        u, v, z = project_points(points, c2w, K)
        col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        inside = (z > 1e-6) & (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
        inside[inside] = mask[row[inside], col[inside]]
        colours[inside, k] = image[row[inside], col[inside]] / 255.0
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(colours, axis=1)
    return np.where(np.isnan(median), np.asarray(fallback, np.float64), median)


def _mouth_colour(ds, frames) -> np.ndarray:
    label = PARSING_LABELS["mouth_interior"]
    values = [ds.gt(f)[ds.parsing(f) == label] for f in frames]
    values = np.concatenate([v for v in values if len(v)] or [np.zeros((0, 3))])
    return values.mean(0) / 255.0 if len(values) >= 16 else np.asarray(DEFAULT_MOUTH_RGB)


def _ray_plane(c2w: np.ndarray, K: np.ndarray, pixel: np.ndarray, z: float) -> np.ndarray:
    """The world point where the ray through ``pixel`` (u, v continuous) meets the plane world z = ``z``."""
    direction = c2w[:3, :3] @ np.array([(pixel[0] - K[0, 2]) / K[0, 0], (pixel[1] - K[1, 2]) / K[1, 1], 1.0])
    origin = c2w[:3, 3]
    return origin + direction * (z - origin[2]) / direction[2]


def seed_points(ds, box, count: int, mouth_count: int, face=None, seed: int = 0, max_frames: int = 24,
                resolution: int = 64) -> SeedPoints:
    """Seeds of a Gaussian head (module docstring).

    Args:
        ds: a subject with the pose and parsing steps done.
        box: the head's world box (xmin, ymin, zmin, xmax, ymax, zmax).
        count, mouth_count: seeds of the head and of the mouth interior.
        face: a :class:`synctalk.face.canonical.CanonicalFace`, or None (hull only).
        resolution: hull grid points along the box's longest side.
    """
    rng = np.random.default_rng(seed)
    frames = sample_frames(ds, max_frames=max_frames)
    K = np.asarray(ds.intrinsics, np.float64)
    poses = np.asarray(ds.poses, np.float64)
    masks = [head_mask(ds, f) for f in frames]
    cams = [poses[f] for f in frames]
    images = [ds.gt(f) for f in frames]
    hull, step = _hull_surface(masks, cams, K, box, resolution)

    if face is not None:
        scale = ds.meta.get("pose", {}).get("model_scale_xyz", (1.0, 1.0, 1.0))
        vertices = face.world_vertices(scale)
        n_face = int(round(FACE_FRACTION * count))
        on_face = _surface_samples(vertices, face.triangles, n_face, rng)
        # the hull's front over the face is the cone of near-frontal views: the mesh stands in for it there
        from scipy.spatial import cKDTree

        distance, nearest = cKDTree(on_face[:, :2]).query(hull[:, :2])
        hull = hull[(distance > 1.5 * step) | (hull[:, 2] > on_face[nearest, 2] + 1.5 * step)]
        inner = vertices[list(INNER_LIPS)]
        width = float(np.linalg.norm(vertices[78] - vertices[308]))
        mouth_centre = inner.mean(0) + np.array([0.0, 0.0, MOUTH_DEPTH])
    else:
        log.warning("no canonical face mesh: the Gaussian head starts from the head masks' visual hull only")
        on_face = np.zeros((0, 3))
        middle = frames[len(frames) // 2]
        lips = np.asarray(ds.landmarks[middle])[:, :2]
        mouth_centre = _ray_plane(poses[middle], K, lips[[13, 14]].mean(0), NOSE_TIP_Z + 0.3)
        corners = [_ray_plane(poses[middle], K, lips[i], NOSE_TIP_Z + 0.2) for i in (78, 308)]
        width = float(np.linalg.norm(corners[0] - corners[1]))
    n_hull = count - len(on_face)
    if len(hull) == 0:
        hull = on_face if len(on_face) else np.zeros((1, 3))
    picked = hull[rng.choice(len(hull), n_hull, replace=n_hull > len(hull))]
    head = np.concatenate([on_face, picked + rng.uniform(-step / 2, step / 2, picked.shape)])

    radii = np.array([MOUTH_RADII[0] * width, MOUTH_RADII[1], MOUTH_RADII[2]])
    directions = rng.normal(size=(mouth_count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    mouth = mouth_centre + directions * radii * rng.random((mouth_count, 1)) ** (1 / 3)

    head_pixels = np.concatenate([img[m] for img, m in zip(images, masks, strict=True)] + [np.zeros((0, 3))])
    mean_rgb = np.median(head_pixels, axis=0) / 255.0 if len(head_pixels) else np.full(3, 0.5)
    head_rgb = _median_colours(head, images, masks, cams, K, mean_rgb)
    mouth_rgb = np.broadcast_to(_mouth_colour(ds, frames), mouth.shape).copy()
    return SeedPoints(head.astype(np.float32), head_rgb.astype(np.float32), mouth.astype(np.float32),
                      mouth_rgb.astype(np.float32))
