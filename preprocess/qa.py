"""QA pictures of a subject directory, for people: `qa/sheet.png` (sampled frames with landmarks, parsing
overlay, gt frame, torso plate), `qa/blendshapes.png` (jawOpen and blinks over time), `qa/crop.png` (written by
the frames step). Only what the finished steps provide is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synctalk.data import SubjectDataset
from synctalk.data.contract import BLENDSHAPE_NAMES, FACE_INTERPOLATED, FACE_MISSING, PARSING_LABELS
from synctalk.io.atomic import atomic_path
from synctalk.io.images import write_image

# RGB colour per parsing label (background transparent).
LABEL_COLOURS = {
    "head": (255, 200, 0), "neck": (0, 200, 255), "torso": (60, 90, 255), "lips": (255, 0, 80),
    "mouth_interior": (120, 0, 160), "eyes": (0, 255, 90), "brows": (150, 90, 0),
}
TILE = 256


def label_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The frame with each parsing label tinted in its LABEL_COLOURS colour."""
    out = rgb.astype(np.float32)
    for name, colour in LABEL_COLOURS.items():
        mask = labels == PARSING_LABELS[name]
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)


def draw_landmarks(rgb: np.ndarray, landmarks: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    import cv2

    out = rgb.copy()
    radius = max(1, rgb.shape[0] // 400)
    for x, y in landmarks[:, :2]:
        cv2.circle(out, (int(x), int(y)), radius, colour, -1, lineType=cv2.LINE_AA)
    return out


def _tile(image: np.ndarray, caption: str) -> np.ndarray:
    import cv2

    tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    cv2.putText(tile, caption, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, caption, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheet(ds: SubjectDataset, n_rows: int = 6) -> np.ndarray:
    """Rows of sampled frames; columns frame+landmarks | parsing | gt | torso as far as the steps exist."""
    picks = np.linspace(0, len(ds) - 1, min(n_rows, len(ds))).round().astype(int)
    rows = []
    for i in picks:
        image = ds.image(i)
        tiles = []
        if "landmarks" in ds.steps and ds.face_flags[i] != FACE_MISSING:
            flag = "interp." if ds.face_flags[i] == FACE_INTERPOLATED else ""
            tiles.append(_tile(draw_landmarks(image, ds.landmarks[i]), f"frame {i} {flag}"))
        else:
            tiles.append(_tile(image, f"frame {i} (no face)" if "landmarks" in ds.steps else f"frame {i}"))
        if "parsing" in ds.steps:
            tiles.append(_tile(label_overlay(image, ds.parsing(i)), "parsing"))
        if "background" in ds.steps:
            tiles.append(_tile(ds.gt(i), "gt"))
        if "torso" in ds.steps:
            tiles.append(_tile(ds.torso(i), "torso plate"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def blendshape_plot(ds: SubjectDataset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synctalk.face.landmarks import runs

    t = np.arange(len(ds)) / ds.fps
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for name, colour in (("jawOpen", "C3"), ("eyeBlinkLeft", "C0"), ("eyeBlinkRight", "C2")):
        ax.plot(t, ds.blendshapes[:, BLENDSHAPE_NAMES.index(name)], color=colour, lw=1, label=name)
    for flag, colour, label in ((FACE_MISSING, "0.6", "no face (excluded)"), (FACE_INTERPOLATED, "gold",
                                                                            "interpolated")):
        for k, (a, b) in enumerate(runs(ds.face_flags == flag)):
            ax.axvspan(a / ds.fps, (b + 1) / ds.fps, color=colour, alpha=0.4, lw=0, label=label if k == 0 else None)
    ax.set(xlabel="time (s)", ylabel="score", xlim=(0, len(ds) / ds.fps), ylim=(0, 1))
    ax.legend(loc="upper right", fontsize=8, ncol=5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_qa(root: str | Path) -> list[Path]:
    """Write the QA pictures for whatever steps are done; returns their paths."""
    root = Path(root)
    ds = SubjectDataset(root, require=("frames",), cache_frames=0)
    written = [root / "qa" / "sheet.png"]
    write_image(written[0], contact_sheet(ds))
    if "landmarks" in ds.steps:
        written.append(root / "qa" / "blendshapes.png")
        blendshape_plot(ds, written[-1])
    if (root / "qa" / "crop.png").is_file():
        written.append(root / "qa" / "crop.png")
    return written


def pose_plot(estimate, fps: float, path: Path) -> None:
    """Head angles and camera position over time, per-frame fit (thin) vs stabilised (thick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(estimate.c2w)) / fps
    fig, axes = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    for k, name in enumerate(("yaw", "pitch", "roll")):
        axes[0].plot(t, estimate.euler_raw_deg[:, k], color=f"C{k}", lw=0.6, alpha=0.6)
        axes[0].plot(t, estimate.euler_deg[:, k], color=f"C{k}", lw=1.6, label=name)
    for k, name in enumerate(("x", "y", "z")):
        axes[1].plot(t, estimate.c2w_raw[:, k, 3], color=f"C{k + 3}", lw=0.6, alpha=0.6)
        axes[1].plot(t, estimate.c2w[:, k, 3], color=f"C{k + 3}", lw=1.6, label=f"camera {name}")
    s = estimate.stats
    axes[0].set(ylabel="degrees", title=f"head pose: thin = per-frame fit, thick = stabilised   "
                                         f"(jitter {s['jitter_deg_raw']:.3f} -> {s['jitter_deg']:.3f} deg/frame^2, "
                                         f"reprojection {s['reprojection_px_raw']:.2f} -> {s['reprojection_px']:.2f}"
                                         f" px, focal {s['focal_px']:.0f} px)")
    axes[1].set(ylabel="world units", xlabel="time (s)")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def head_axes_sheet(ds: SubjectDataset, c2w: np.ndarray, c2w_raw: np.ndarray, K: np.ndarray, path: Path,
                    n_frames: int = 6) -> None:
    """Sampled frames with the head's world axes projected (x red, y green, z blue, 0.5 units long): thick for
    the stabilised pose, thin for the per-frame fit."""
    import cv2

    picks = np.linspace(0, len(ds) - 1, min(n_frames, len(ds))).round().astype(int)
    axes = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], np.float64)
    tiles = []
    for i in picks:
        image = ds.image(i).copy()
        for poses, thickness in ((c2w_raw, 1), (c2w, 3)):
            w2c = np.linalg.inv(poses[i].astype(np.float64))
            cam = axes @ w2c[:3, :3].T + w2c[:3, 3]
            uv = cam[:, :2] / cam[:, 2:3] * np.diag(K)[:2] + K[:2, 2]
            for k, colour in ((1, (255, 40, 40)), (2, (40, 255, 40)), (3, (40, 80, 255))):
                cv2.line(image, tuple(np.round(uv[0]).astype(int)), tuple(np.round(uv[k]).astype(int)), colour,
                         thickness, cv2.LINE_AA)
        tiles.append(_tile(image, f"frame {i}"))
    write_image(path, np.concatenate(tiles, axis=1))


def torso_track_plot(ds: SubjectDataset, track, path: Path) -> None:
    """The torso track over time (shift in pixels, scale) beside the canonical template it is measured against."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synctalk.face.landmarks import runs

    t = np.arange(len(ds)) / ds.fps
    shift = track.tracks[:, :, 2] * np.array([ds.width, ds.height]) / 2
    scale = np.sqrt(np.abs(np.linalg.det(track.tracks[:, :, :2])))
    fig, (ax, image) = plt.subplots(1, 2, figsize=(14, 3.6), gridspec_kw={"width_ratios": [4, 1]})
    ax.plot(t, shift[:, 0], color="C0", lw=1, label="shift x (px)")
    ax.plot(t, shift[:, 1], color="C1", lw=1, label="shift y (px)")
    ax.plot(t, (scale - 1) * 100, color="C2", lw=1, label="scale - 1 (%)")
    for k, (a, b) in enumerate(runs(track.failed)):
        ax.axvspan(a / ds.fps, (b + 1) / ds.fps, color="0.6", alpha=0.4, lw=0, label="interpolated" if k == 0 else None)
    ax.set(xlabel="time (s)", xlim=(0, len(ds) / ds.fps), title="torso track (canonical template -> frame)")
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    if track.template.size:
        image.imshow(track.template, cmap="gray", vmin=0, vmax=1)
    image.set_title("template frame", fontsize=9)
    image.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
