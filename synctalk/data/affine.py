"""The torso track's coordinate conventions: 2D affine maps [..., 2, 3] between OpenCV pixel coordinates and the
normalised [-1, 1]^2 image coordinates the torso model uses (``torso_track.npy`` holds canonical → frame maps in the
normalised form). NumPy only, so preprocessing and the models share one definition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["homogeneous", "normalized_affine", "pixel_affine", "warp_to_canonical"]


def _pixels_from_normalized(width: int, height: int) -> np.ndarray:
    """3x3 map from normalised coordinates to OpenCV pixel coordinates (pixel centres at integers)."""
    return np.array([[width / 2, 0, width / 2 - 0.5], [0, height / 2, height / 2 - 0.5], [0, 0, 1]])


def homogeneous(matrix: np.ndarray) -> np.ndarray:
    """Affine maps [..., 2, 3] as [..., 3, 3] matrices (last row 0, 0, 1)."""
    return np.concatenate([matrix, np.broadcast_to([0.0, 0.0, 1.0], (*matrix.shape[:-2], 1, 3))], axis=-2)


def normalized_affine(matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """An affine map [..., 2, 3] in OpenCV pixel coordinates of a ``width`` x ``height`` image (as from
    ``cv2.findTransformECC`` or for ``cv2.warpAffine``) → the same map in [-1, 1]^2 (pixel centres at
    ``(u + 0.5) / W * 2 - 1``, as ``synctalk.models.torso.normalize_pixels``)."""
    to_pixels = _pixels_from_normalized(width, height)
    return (np.linalg.inv(to_pixels) @ homogeneous(matrix) @ to_pixels)[..., :2, :]


def pixel_affine(matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`normalized_affine`: a [..., 2, 3] map in [-1, 1]^2 → OpenCV pixels of a ``width`` x
    ``height`` image."""
    to_pixels = _pixels_from_normalized(width, height)
    return (to_pixels @ homogeneous(matrix) @ np.linalg.inv(to_pixels))[..., :2, :]


def warp_to_canonical(image: np.ndarray, track: np.ndarray, nearest: bool = False) -> np.ndarray:
    """A frame (any resolution) resampled into the canonical torso coordinates of its ``track`` [2, 3]
    (normalised, canonical → frame): ``out(q) = image(A q)``. ``nearest`` for label maps."""
    import cv2

    height, width = image.shape[:2]
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, pixel_affine(np.asarray(track, np.float64), width, height), (width, height),
                          flags=flags, borderMode=cv2.BORDER_REPLICATE)
