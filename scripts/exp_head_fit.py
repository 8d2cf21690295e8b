#!/usr/bin/env python
"""Does the head underfit or overfit? Head-region PSNR on training frames against held-out frames.

    python scripts/exp_head_fit.py SUBJECT -w WORKSPACE [--size 256] [--every 8] [--shift 3]

The head is rendered over each frame's true torso plate (the torso model is left out), for every `--every`-th
held-out frame and as many training frames spread over the clip. Per set: PSNR of the head region (parsing
HEAD_LABELS), of its interior (the mask eroded by size/64 px) and of the boundary band that erosion removes, the
band's share of the head's squared error, the head region again after the best per-frame 2D shift of the render
(within ±`--shift` px in half-pixel steps: how much is misplacement rather than blur), and the full frame.

Equal PSNR on both sets means the head is not overfitting: more capacity or steps would help held-out frames too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exp_torso_bound import pooled_psnr  # noqa: E402  (scripts/ is the script's own folder)


def best_shift_error(render: np.ndarray, truth: np.ndarray, mask: np.ndarray, reach: float) -> np.ndarray:
    """Squared error map [H, W] of `render` shifted by the whole or half pixel offset that minimises it in `mask`."""
    import cv2

    height, width = mask.shape
    best, best_total = None, np.inf
    for dx in np.arange(-reach, reach + 1e-6, 0.5):
        for dy in np.arange(-reach, reach + 1e-6, 0.5):
            moved = cv2.warpAffine(render, np.float32([[1, 0, dx], [0, 1, dy]]), (width, height),
                                   borderMode=cv2.BORDER_REPLICATE)
            error = ((moved - truth) ** 2).mean(-1)
            if error[mask].sum() < best_total:
                best, best_total = error, error[mask].sum()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256, help="square size the frames are compared at")
    parser.add_argument("--every", type=int, default=8, help="use every n-th held-out frame")
    parser.add_argument("--shift", type=float, default=3.0, help="largest shift tried per axis (pixels)")
    args = parser.parse_args()

    import cv2

    from synctalk.data import SubjectDataset
    from synctalk.data.contract import HEAD_LABELS
    from synctalk.eval.evaluate import render_split
    from synctalk.inference.avatar import Avatar

    ds = SubjectDataset(args.subject, require=("frames", "parsing", "pose", "splits"))
    size = args.size
    held_out = [int(f) for f in ds.split("val")][::args.every]
    training = [int(f) for f in ds.split("train")][::4 * args.every][:len(held_out)]
    avatar = Avatar.load(args.workspace)
    avatar.torso = None  # the head over each frame's own torso plate
    radius = max(1, size // 64)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    print(f"{args.workspace}: head over the true torso plate, {size} x {size}\n")
    print("| frames | head | head, best shift | head interior | head boundary band | band's share of head error "
          "| full frame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, frames in ((f"{len(training)} training", training), (f"{len(held_out)} held-out", held_out)):
        renders, _ = render_split(avatar, frames, progress=True, size=size)
        errors, shifted, heads, interiors, bands = [], [], [], [], []
        for render, frame in zip(renders, frames, strict=True):
            render = np.asarray(render, np.float32) / (255 if render.dtype == np.uint8 else 1)
            truth = cv2.resize(ds.gt(frame), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            labels = cv2.resize(ds.parsing(frame), (size, size), interpolation=cv2.INTER_NEAREST)
            head = np.isin(labels, HEAD_LABELS)
            interior = cv2.erode(head.astype(np.uint8), kernel).astype(bool)
            errors.append(((render - truth) ** 2).mean(-1))
            shifted.append(best_shift_error(render, truth, head, args.shift))
            heads.append(head)
            interiors.append(interior)
            bands.append(head & ~interior)
        band_error = sum(e[b].sum() for e, b in zip(errors, bands, strict=True))
        share = band_error / sum(e[h].sum() for e, h in zip(errors, heads, strict=True))
        full = [np.ones_like(h) for h in heads]
        print(f"| {name} | {pooled_psnr(errors, heads):.2f} | {pooled_psnr(shifted, heads):.2f} | "
              f"{pooled_psnr(errors, interiors):.2f} | {pooled_psnr(errors, bands):.2f} | {share:.2f} | "
              f"{pooled_psnr(errors, full):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
