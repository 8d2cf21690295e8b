"""Lower-face crops for the sync model's visual tower, aligned per frame with the Face Landmarker mesh.

The crop is a rectangle in face coordinates: centred between the nose tip and the chin, as wide as the face at
the cheeks (landmarks 234 and 454) and half as tall, rotated with the line between the cheeks, so head roll and
scale changes do not move the mouth inside the crop. Output: grey `uint8` `[CROP_H, CROP_W]` (48 x 96, the lower
half of Wav2Lip's 96 px face).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

CROP_H, CROP_W = 48, 96
NOSE_TIP, CHIN, CHEEK_RIGHT, CHEEK_LEFT = 1, 152, 234, 454   # MediaPipe mesh indices (subject's right = image left)


def crop_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 affine mapping image pixels to crop pixels for one frame's `[478, 2+]` landmarks (pixels)."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    axis = pts[CHEEK_LEFT] - pts[CHEEK_RIGHT]
    width = float(np.linalg.norm(axis))
    angle = float(np.arctan2(axis[1], axis[0]))
    centre = 0.5 * (pts[NOSE_TIP] + pts[CHIN])
    scale = CROP_W / max(width, 1e-6)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    # rotate by -angle and scale about the centre, then move the centre to the crop centre
    matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    matrix[:, 2] = np.array([CROP_W / 2, CROP_H / 2]) - matrix[:, :2] @ centre
    return matrix


def lower_face(image: np.ndarray, landmarks: np.ndarray, margin: int = 0) -> np.ndarray:
    """Grey lower-face crop `[48 + 2m, 96 + 4m]` uint8 (m = `margin`, the same scale with context around it, for
    random-shift augmentation) from an RGB `[H, W, 3]` frame and its `[478, 2+]` landmarks."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    matrix = crop_transform(landmarks)
    matrix[:, 2] += (2 * margin, margin)
    return cv2.warpAffine(grey, matrix, (CROP_W + 4 * margin, CROP_H + 2 * margin), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def lower_faces(images: Iterable[np.ndarray], landmarks: np.ndarray, margin: int = 0) -> Iterator[np.ndarray]:
    """`lower_face` for each frame of a clip (landmarks `[N, 478, 2+]`)."""
    for image, points in zip(images, landmarks, strict=False):
        yield lower_face(image, points, margin)
