"""Image files: RGB in, RGB out (OpenCV's BGR stays inside this module); writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synctalk.errors import MediaError
from synctalk.io.atomic import atomic_path

JPEG_QUALITY = 95


def read_image(path: str | Path) -> np.ndarray:
    """Read an image: colour → `[H, W, 3] uint8` RGB; single-channel (masks, label maps) → `[H, W] uint8`."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        what = "not found" if not Path(path).exists() else "unreadable (corrupt or not an image)"
        raise MediaError(f"{path}: image {what}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if image.dtype != np.uint8:
        raise MediaError(f"{path}: expected an 8-bit image, got {image.dtype}")
    return image


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write `[H, W, 3]` RGB or `[H, W]` uint8; the format follows the suffix (.jpg at quality 95, .png)."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"write_image expects uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if Path(path).suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", data, params)
    if not ok:
        raise MediaError(f"{path}: could not encode the image as {Path(path).suffix or '(no suffix)'}; use .jpg or "
                         f".png")
    # Written by Python rather than cv2.imwrite, which reports a full disk as a bare False: here ENOSPC raises,
    # and atomic_path turns it into a DiskFullError naming the path and the space left.
    with atomic_path(path) as tmp:
        _write_bytes(tmp, encoded.tobytes())


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
