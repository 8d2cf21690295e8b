"""MediaPipe's canonical face model, read from the Face Landmarker bundle (face_landmarker.task).

The bundle's geometry metadata holds the 468-vertex canonical mesh (centimetres, y up, z towards the viewer)
and the 33 landmarks, with weights, that MediaPipe itself uses for its rigid (Procrustes) head fit: points on
the forehead, nose bridge, temples and eye corners that do not move when the person speaks or blinks.

We use it in world axes (docs/dataset.md): x right, y down, z from the camera into the face, i.e. the
canonical model with y and z negated.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synctalk.errors import AssetError

GEOMETRY_ENTRY = "geometry_pipeline_metadata_landmarks.binarypb"
CM_PER_UNIT = 15.0  # world units (docs/dataset.md): the face is about [-1, 1]^3; hair may reach past it
CANONICAL_TO_WORLD = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CanonicalFace:
    vertices: np.ndarray       # [468, 3] float64, centimetres, world axes
    triangles: np.ndarray      # [T, 3] int64 vertex indices
    rigid_ids: np.ndarray      # [33] landmark indices of the rigid set
    rigid_weights: np.ndarray  # [33] float64, MediaPipe's Procrustes weights (sum 1)

    @property
    def rigid_points(self) -> np.ndarray:
        return self.vertices[self.rigid_ids]

    def world_vertices(self, model_scale=(1.0, 1.0, 1.0)) -> np.ndarray:
        """[468, 3] vertices in world units, scaled per axis like the subject's pose fit (its
        ``meta.json`` ``pose.model_scale_xyz``)."""
        return self.vertices * np.asarray(model_scale, np.float64) / CM_PER_UNIT


@functools.lru_cache(maxsize=4)
def load_canonical_face(task_path: str | Path | None = None) -> CanonicalFace:
    """Read the canonical face from `task_path` (default: the `face_landmarker` asset)."""
    from synctalk import assets
    from synctalk.runtime import import_mediapipe

    import_mediapipe()
    from mediapipe.modules.face_geometry.protos import geometry_pipeline_metadata_pb2

    path = Path(task_path) if task_path else assets.fetch("face_landmarker")
    try:
        with zipfile.ZipFile(path) as bundle:
            data = bundle.read(GEOMETRY_ENTRY)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise AssetError(f"{path}: no {GEOMETRY_ENTRY} inside ({exc}); is it the Face Landmarker bundle?") from None
    meta = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
    meta.ParseFromString(data)
    buffer = np.asarray(meta.canonical_mesh.vertex_buffer, np.float64).reshape(-1, 5)  # x, y, z, u, v
    vertices = buffer[:, :3] @ CANONICAL_TO_WORLD.T
    triangles = np.asarray(meta.canonical_mesh.index_buffer, np.int64).reshape(-1, 3)
    ids = np.array([b.landmark_id for b in meta.procrustes_landmark_basis], np.int64)
    weights = np.array([b.weight for b in meta.procrustes_landmark_basis], np.float64)
    return CanonicalFace(vertices, triangles, ids, weights / weights.sum())
