"""What drives everything but the mouth in a new video: head pose and upper-face expression per output frame.

Pose (`--pose`):
- ``train``: replay the training frames forwards then backwards (…, n-2, n-1, n-2, …), as SyncTalk does, so the
  motion never jumps;
- ``still``: one frame's pose for the whole video (``still_frame``, default the first training frame);
- ``smooth``: the ``train`` replay with its poses low-passed (Gaussian, ``sigma`` frames): translations averaged,
  rotations averaged and projected back onto SO(3); the torso tracks low-passed alike.

Blinks (`--blink`), on the eyeBlink channels of the expression vector (the other channels always follow the pose
frame):
- ``source``: the pose frame's own blendshapes (its blinks come along);
- ``auto``: eyes held open (the subject's 10th percentile) with blinks every 2–6 s (random, seeded), 0.25 s
  raised-cosine closing to the subject's 95th percentile;
- ``none``: eyes held open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synctalk.errors import UserInputError

POSE_MODES = ("train", "still", "smooth")
BLINK_MODES = ("source", "auto", "none")
BLINK_NAMES = ("eyeBlinkLeft", "eyeBlinkRight")


@dataclass
class Drive:
    pose_frames: np.ndarray     # [N] subject frame whose appearance code (and torso plate) each output frame uses
    c2w: np.ndarray             # [N, 4, 4] camera-to-world poses
    expressions: np.ndarray     # [N, E]
    torso_tracks: np.ndarray | None = None  # [N, 2, 3] where the body is (the pose frames' torso tracks)


def ping_pong(indices: list[int] | np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """``n`` items of ``indices`` walked forwards then backwards from position ``start``.

    Example: indices [5, 6, 7], n 6 → [5, 6, 7, 6, 5, 6].
    """
    indices = np.asarray(indices)
    if len(indices) == 1:
        return np.repeat(indices, n)
    period = 2 * (len(indices) - 1)
    position = (start + np.arange(n)) % period
    return indices[np.where(position < len(indices), position, period - position)]


def smooth_poses(c2w: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of a pose sequence ``[N, 4, 4]`` (edges reflected); rotations re-orthonormalised (SVD)."""
    from scipy.ndimage import gaussian_filter1d

    if sigma <= 0 or len(c2w) < 2:
        return c2w.copy()
    out = c2w.copy()
    out[:, :3, 3] = gaussian_filter1d(c2w[:, :3, 3], sigma, axis=0, mode="nearest")
    mean_rotation = gaussian_filter1d(c2w[:, :3, :3], sigma, axis=0, mode="nearest")
    u, _, vt = np.linalg.svd(mean_rotation)
    fix = np.ones((len(c2w), 3))
    fix[:, 2] = np.sign(np.linalg.det(u @ vt))
    out[:, :3, :3] = (u * fix[:, None, :]) @ vt
    return out


def blink_curve(n: int, fps: float, rng: np.random.Generator, every_s: tuple[float, float] = (2.0, 6.0),
                duration_s: float = 0.25) -> np.ndarray:
    """``[n]`` in [0, 1]: 0 = open, 1 = closed; raised-cosine blinks at random intervals."""
    curve = np.zeros(n)
    length = max(3, int(round(duration_s * fps))) | 1   # odd: the middle sample is fully closed
    shape = 0.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, length))
    t = rng.uniform(0.5, every_s[1]) * fps
    while t < n:
        start = int(t)
        stop = min(n, start + length)
        curve[start:stop] = np.maximum(curve[start:stop], shape[:stop - start])
        t += rng.uniform(*every_s) * fps
    return curve


def make_drive(n: int, poses: np.ndarray, expressions: np.ndarray, expression_names: tuple[str, ...] | list[str],
               train_frames: list[int], fps: float, pose: str = "train", blink: str = "source",
               still_frame: int | None = None, smooth_sigma: float = 3.0, seed: int = 0,
               torso_tracks: np.ndarray | None = None) -> Drive:
    """The pose and expression of each of ``n`` output frames.

    Args:
        poses: [F, 4, 4] the subject's poses; expressions: [F, E] its expression vectors (columns named by
            ``expression_names``); train_frames: the frames to replay; torso_tracks: [F, 2, 3] the subject's
            torso tracks (optional).
    """
    if pose not in POSE_MODES:
        raise UserInputError(f"--pose must be one of {', '.join(POSE_MODES)}, got '{pose}'")
    if blink not in BLINK_MODES:
        raise UserInputError(f"--blink must be one of {', '.join(BLINK_MODES)}, got '{blink}'")
    if pose == "still":
        frame = train_frames[0] if still_frame is None else int(still_frame)
        if not 0 <= frame < len(poses):
            raise UserInputError(f"--still-frame {frame} is outside the subject's frames 0..{len(poses) - 1}")
        frames = np.full(n, frame)
    else:
        frames = ping_pong(train_frames, n)
    c2w = poses[frames].copy()
    tracks = None if torso_tracks is None else np.asarray(torso_tracks)[frames].copy()
    if pose == "smooth":
        c2w = smooth_poses(c2w, smooth_sigma)
        if tracks is not None and smooth_sigma > 0:
            from scipy.ndimage import gaussian_filter1d

            tracks = gaussian_filter1d(tracks, smooth_sigma, axis=0, mode="nearest")
    expr = expressions[frames].copy()
    columns = [i for i, name in enumerate(expression_names) if name in BLINK_NAMES]
    if blink != "source" and columns:
        scores = expressions[:, columns]
        opened, closed = np.percentile(scores, 10, axis=0), np.percentile(scores, 95, axis=0)
        curve = blink_curve(n, fps, np.random.default_rng(seed)) if blink == "auto" else np.zeros(n)
        expr[:, columns] = opened + curve[:, None] * (closed - opened)
    return Drive(frames, c2w, expr, tracks)
