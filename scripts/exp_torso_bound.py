#!/usr/bin/env python
"""How far above the mean training frame can a head + torso composite get on held-out frames?

    python scripts/exp_torso_bound.py SUBJECT [-w WORKSPACE] [--size 128] [--every 4] [--sheet errors.png]

1. Without a model: can the head pose predict the torso at all? For every `--every`-th held-out frame, the
   neck + torso region (parsing labels) is predicted by the mean training frame, and by the mean of the K training
   frames whose pose (standardised 6-D pose_vector) is nearest. Leave-one-out on training frames is printed beside
   it: there, neighbours in pose are also neighbours in time. Last, the training frames' mean aligned by the torso
   track (`torso_track.npy`) and moved to each frame's track, which is what the torso model starts from. Then the
   height of the shoulder line (top of the neck + torso mask, averaged over the outer sixth of the frame on each
   side) and how much of it a linear fit from the pose explains (R², fitted on training frames).
2. With a trained workspace: PSNR per region of the model's own render (head over the torso model over the
   background plate), of the head over each frame's true torso plate (a torso oracle) and of the mean training
   frame; then the full frame the composite would reach if the neck + torso region were predicted as well as the
   best predictor of step 1 and everything else were as good as with the oracle.

PSNR here pools the squared error over all pixels of a region in all frames (region shares add up).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NEIGHBOURS = (1, 10, 50, 200)


def pooled_psnr(errors: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """PSNR of the mean squared error over the masked pixels of all frames (errors [H, W] per frame)."""
    total = sum(float(e[m].sum()) for e, m in zip(errors, masks, strict=True))
    count = sum(int(m.sum()) for m in masks)
    return float(-10 * np.log10(total / max(count, 1)))


def shoulder_heights(parsing: np.ndarray, neck_torso: tuple[int, ...]) -> tuple[float, float]:
    """Mean first row of the neck + torso mask over the outer sixth of columns, left and right."""
    mask = np.isin(parsing, neck_torso)
    top = np.where(mask.any(0), mask.argmax(0), mask.shape[0]).astype(float)
    edge = max(1, mask.shape[1] // 6)
    return float(top[:edge].mean()), float(top[-edge:].mean())


def print_shoulder_fit(ds, pose: np.ndarray, train: np.ndarray, val: np.ndarray, size: int) -> None:
    from synctalk.data.contract import TORSO_LABELS

    scale = size / ds.width
    heights = np.array([shoulder_heights(ds.parsing(int(f)), TORSO_LABELS) for f in range(len(ds))]) * scale
    design = np.c_[pose, np.ones(len(pose))]
    weights = np.linalg.lstsq(design[train], heights[train], rcond=None)[0]
    print(f"\n| shoulder line ({size} px) | std, training | std, held-out | R² from pose, training | "
          "R² from pose, held-out |")
    print("|---|---:|---:|---:|---:|")
    residual = design @ weights - heights

    def r2(frames: np.ndarray, column: int) -> float:
        truth = heights[frames, column]
        return 1 - float((residual[frames, column] ** 2).sum() / ((truth - truth.mean()) ** 2).sum())

    for side, column in (("left", 0), ("right", 1)):
        print(f"| {side} | {heights[train, column].std():.2f} px | {heights[val, column].std():.2f} px | "
              f"{r2(train, column):.2f} | {r2(val, column):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("-w", "--workspace", type=Path)
    parser.add_argument("--size", type=int, default=128, help="square size the frames are compared at")
    parser.add_argument("--every", type=int, default=4, help="use every n-th held-out frame")
    parser.add_argument("--sheet", type=Path, help="PNG of mean squared error maps: model, torso oracle, mean frame")
    args = parser.parse_args()

    import cv2
    import torch

    from synctalk.data import SubjectDataset
    from synctalk.data.contract import HEAD_LABELS, PARSING_LABELS, TORSO_LABELS
    from synctalk.models.torso import pixel_affine, pose_vector, warp_to_canonical

    ds = SubjectDataset(args.subject, require=("frames", "parsing", "pose", "torso_track", "splits"))
    size = args.size
    train, val = np.asarray(ds.split("train")), np.asarray(ds.split("val"))[::args.every]

    def image(frame: int) -> np.ndarray:
        return cv2.resize(ds.gt(int(frame)), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255

    def labels(frame: int) -> np.ndarray:
        return cv2.resize(ds.parsing(int(frame)), (size, size), interpolation=cv2.INTER_NEAREST)

    images = {int(f): image(f) for f in np.concatenate([train, val])}
    mean = np.mean([images[int(f)] for f in train], axis=0)
    regions = {"head": lambda lab: np.isin(lab, HEAD_LABELS), "neck + torso": lambda lab: np.isin(lab, TORSO_LABELS),
               "background": lambda lab: lab == PARSING_LABELS["background"],
               "full frame": lambda lab: np.ones(lab.shape, bool)}

    pose = pose_vector(torch.tensor(np.array(ds.poses), dtype=torch.float32)).numpy()
    pose = (pose - pose[train].mean(0)) / (pose[train].std(0) + 1e-8)

    def torso_psnr(frames: np.ndarray, predict) -> float:
        errors, masks = [], []
        for f in frames:
            errors.append(((predict(int(f)) - images[int(f)]) ** 2).mean(-1))
            masks.append(regions["neck + torso"](labels(f)))
        return pooled_psnr(errors, masks)

    def nearest_in_pose(k: int):
        def predict(frame: int) -> np.ndarray:
            distance = ((pose[train] - pose[frame]) ** 2).sum(1)
            distance[train == frame] = np.inf  # leave one out
            return np.mean([images[int(f)] for f in train[np.argsort(distance)[:k]]], axis=0)
        return predict

    train_probe = train[::max(1, len(train) // len(val))][:len(val)]
    print(f"{ds.root.name}: {len(train)} training frames, {len(val)} held-out frames used, {size} x {size}\n")
    print("| neck + torso predicted by | held-out PSNR | training PSNR (leave one out) |")
    print("|---|---:|---:|")
    best = torso_psnr(val, lambda f: mean)
    print(f"| mean training frame | {best:.2f} | {torso_psnr(train_probe, lambda f: mean):.2f} |")
    for k in NEIGHBOURS:
        held_out = torso_psnr(val, nearest_in_pose(k))
        best = max(best, held_out)
        print(f"| mean of the {k} nearest training frames in pose | {held_out:.2f} | "
              f"{torso_psnr(train_probe, nearest_in_pose(k)):.2f} |")
    tracks = np.asarray(ds.torso_track)
    aligned = np.mean([warp_to_canonical(images[int(f)], tracks[f]) for f in train], axis=0)

    def moved_by_track(frame: int) -> np.ndarray:
        return cv2.warpAffine(aligned, pixel_affine(tracks[frame], size, size), (size, size),
                              borderMode=cv2.BORDER_REPLICATE)

    tracked = torso_psnr(val, moved_by_track)
    best = max(best, tracked)
    print(f"| training frames' mean aligned by the torso track, moved to the frame's track | {tracked:.2f} | "
          f"{torso_psnr(train_probe, moved_by_track):.2f} |")
    print_shoulder_fit(ds, pose, train, np.asarray(ds.split("val")), size)
    if args.workspace is None:
        return 0

    from synctalk.eval.evaluate import render_split
    from synctalk.inference.avatar import Avatar

    avatar = Avatar.load(args.workspace)
    if avatar.torso is None:
        print(f"{args.workspace} has no torso stage yet; train it first", file=sys.stderr)
        return 1
    renders, _ = render_split(avatar, [int(f) for f in val], progress=True, size=size)
    avatar.torso = None  # the head over each frame's own torso plate
    oracle, _ = render_split(avatar, [int(f) for f in val], progress=True, size=size)

    def squared_errors(predictions) -> list[np.ndarray]:
        return [((np.asarray(p, np.float32) / (255 if p.dtype == np.uint8 else 1) - images[int(f)]) ** 2).mean(-1)
                for p, f in zip(predictions, val, strict=True)]

    squared = {"model": squared_errors(renders), "head over the true torso plate": squared_errors(oracle),
               "mean training frame": squared_errors([mean] * len(val))}
    masks = {name: [region(labels(f)) for f in val] for name, region in regions.items()}
    print(f"\n| render of the {len(val)} held-out frames | " + " | ".join(regions) + " |")
    print("|---|" + "---:|" * len(regions))
    for name, errors in squared.items():
        print(f"| {name} | " + " | ".join(f"{pooled_psnr(errors, masks[r]):.2f}" for r in regions) + " |")
    share = {r: np.mean([m.mean() for m in masks[r]]) for r in regions}
    others = sum(share[r] * 10 ** (-pooled_psnr(squared["head over the true torso plate"], masks[r]) / 10)
                 for r in ("head", "background"))
    bound = -10 * np.log10(others + share["neck + torso"] * 10 ** (-best / 10))
    baseline = pooled_psnr(squared["mean training frame"], masks["full frame"])
    model = pooled_psnr(squared["model"], masks["full frame"])
    print(f"\nmodel: {model:.2f} dB full frame, {model - baseline:+.2f} dB over the mean training frame")
    print(f"bound: {bound:.2f} dB ({bound - baseline:+.2f}) with the neck + torso at the best predictor's "
          f"{best:.2f} dB and head and background as over the true torso plate")
    goal = 10 ** (-(baseline + 3) / 10)  # full-frame mean squared error of +3 dB
    background = share["background"] * 10 ** (-pooled_psnr(squared["head over the true torso plate"],
                                                             masks["background"]) / 10)
    head_needed = (goal - background - share["neck + torso"] * 10 ** (-best / 10)) / share["head"]
    print("+3 dB needs the head region at " + (f"{-10 * np.log10(head_needed):.2f} dB" if head_needed > 0 else
                                              "more than any head can give (the torso alone exceeds it)") +
          f" (now {pooled_psnr(squared['model'], masks['head']):.2f}) under the same assumptions")
    if args.sheet:
        maps = [np.clip(np.mean(errors, axis=0) * 30, 0, 1) for errors in squared.values()]
        cv2.imwrite(str(args.sheet), (np.concatenate(maps, axis=1) * 255).astype(np.uint8))
        print(f"error maps (model | head over the true torso plate | mean frame): {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
