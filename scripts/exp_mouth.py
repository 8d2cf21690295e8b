#!/usr/bin/env python
"""Does the head field's mouth follow its inputs? Train the head stage only, then measure on held-out frames.

    python scripts/exp_mouth.py SUBJECT -w WORKSPACE --steps 1000 [--frames 32] [--size 160] [KEY=VALUE ...]

Trains `--steps` NeRF head steps with the nerf_cpu profile and the overrides (no time budget), then renders every 8th
held-out frame (the head over the frame's torso plate) twice: with the frame's own audio code, and with the code of
the training frame whose mouth is most closed (a fixed code). Prints PSNR, LMD and how the rendered MediaPipe
jawOpen follows the real frame's (correlation, spread). A field that uses the audio for the mouth scores a higher
jawOpen correlation with its own codes than with the fixed one; a field that turns the codes into something else
scores a lower PSNR with its own codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    import torch

    from synctalk.config import SyncTalkConfig, load_config
    from synctalk.data.contract import BLENDSHAPE_NAMES
    from synctalk.eval.metrics import landmarks_of_frames, lmd, psnr
    from synctalk.models.frame import render_frame, scaled_intrinsics
    from synctalk.train.trainer import Trainer

    cfg = load_config(SyncTalkConfig, "nerf_cpu", ["train.budget_minutes=0", f"train.head_steps={args.steps}",
                                              "train.eval_every=100000", "train.lips_steps=0", *args.overrides])
    trainer = Trainer(args.subject, args.workspace, cfg, progress=True)
    start = time.perf_counter()
    trainer.run(("head",))
    print(f"head stage: {trainer.state['stages']['head']}, {time.perf_counter() - start:.0f} s wall")
    trainer.head.eval()
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    blendshapes = np.asarray(trainer.ds.blendshapes)
    train = np.asarray(trainer.data.train)
    closed = int(train[np.argmin(blendshapes[train, jaw])])
    frames = np.asarray(trainer.data.val)[::8][:args.frames]
    size = args.size
    K = scaled_intrinsics(trainer.data.K, size / trainer.ds.width)
    truth = [trainer.context.image(trainer.ds.gt(int(f)), size) for f in frames]
    truth_landmarks, truth_found, truth_blend = landmarks_of_frames(
        [(t.numpy() * 255).astype(np.uint8) for t in truth], trainer.ds.fps)
    print("| audio code | PSNR | LMD (px) | r(jawOpen, real) | jawOpen std (real) |")
    print("|---|---:|---:|---:|---:|")
    for label in ("own", "fixed"):
        images = []
        for f in frames:
            inputs = trainer.context.frame_inputs(int(f))
            if label == "fixed":
                inputs = dataclasses.replace(inputs, audio_code=trainer.head.encode_audio(trainer.data.features,
                                                                                          closed))
            with torch.no_grad():
                out = render_frame(trainer.head, None, inputs, K, size, size,
                                   trainer.context.image(trainer.ds.torso(int(f)), size))
            images.append(out.rgb.clamp(0, 1))
        score = np.mean([psnr(image.double(), t.double()) for image, t in zip(images, truth, strict=True)])
        landmarks, found, blend = landmarks_of_frames([(i.numpy() * 255).astype(np.uint8) for i in images],
                                                      trainer.ds.fps)
        ok = found & truth_found
        if ok.sum() < 3:
            print(f"| {label} | {score:.2f} | (no face found) | | |")
            continue
        r = np.corrcoef(blend[ok, jaw], truth_blend[ok, jaw])[0, 1]
        print(f"| {label} | {score:.2f} | {lmd(landmarks, truth_landmarks, valid=ok):.3f} | {r:.2f} | "
              f"{blend[ok, jaw].std():.3f} ({truth_blend[ok, jaw].std():.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
