#!/usr/bin/env python
"""Where the time of a Gaussian head goes: a whole frame's render, part by part, and a training step.

    python scripts/bench_gaussian.py WORKSPACE                       # sizes 256 512, 20 frames, 30 steps
    python scripts/bench_gaussian.py WORKSPACE --sizes 256 --frames 50 --steps 0

Render (the trained EMA weights, the subject's training poses and audio, first frame untimed): the deformation
(networks over every Gaussian), the head's splat (SH colours, projection and rasterization of the face and the
mouth sets, deformation included), the torso, and the whole frame as `synctalk render` draws it (head + torso +
background plate). Training: head-stage steps at the subject's size from the trained weights (whole frame, D-SSIM,
mouth loss; no EMA, validation or checkpoints), split into batch, forward + losses, backward and optimiser.
Prints markdown tables; run it alone (timings on a shared CPU mean nothing).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(sync, fn, *args, **kwargs) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30, help="training steps to time (0: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from synctalk.inference.avatar import Avatar
    from synctalk.models.frame import FrameInputs, scaled_intrinsics
    from synctalk.models.torso import normalize_pixels, pose_vector
    from synctalk.render.rays import pixel_grid

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    avatar = Avatar.load(args.workspace, device)
    head, torso, subject = avatar.head, avatar.torso, avatar.subject
    if getattr(head, "name", "") != "gaussian":
        raise SystemExit(f"{args.workspace}: model.head is {getattr(head, 'name', '?')}, not gaussian")
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    count = head.face.means.shape[0] + head.mouth.means.shape[0]
    print(f"workspace {args.workspace}: {count} Gaussians ({head.mouth.means.shape[0]} in the mouth), subject "
          f"{avatar.ds.width}x{avatar.ds.height}, device {name}\n")

    frames = subject.train[:: max(1, len(subject.train) // (args.frames + 1))][: args.frames + 1]
    codes = avatar.audio_codes(subject.features.cpu().numpy(), frames)
    print("| side | deformation ms | head splat ms | torso ms | whole frame ms | whole frame frames/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        K = scaled_intrinsics(subject.K, size / avatar.ds.width)
        parts: dict[str, list[float]] = {"deform": [], "splat": [], "torso": [], "frame": []}
        for j, frame in enumerate(frames):
            c2w, expression = subject.poses[frame], subject.expressions[frame]
            with torch.no_grad():
                t_deform, _ = _timed(sync, head.deform, codes[j], expression)
                t_splat, _ = _timed(sync, head.splat, c2w, K, size, size, codes[j], expression, frame)
                coords = normalize_pixels(pixel_grid(size, size, device=device), size, size)
                pose = pose_vector(c2w[None])[0]
                t_torso, _ = _timed(sync, torso.render, coords, pose, frame_indices=frame,
                                    track=subject.torso_tracks[frame])
                inputs = FrameInputs(c2w=c2w, audio_code=codes[j], expression=expression, torso_pose=pose,
                                     torso_track=subject.torso_tracks[frame], appearance_frame=frame)
                t_frame, _ = _timed(sync, avatar.render, inputs, frame, size)
            if j:   # the first frame builds caches
                for key, value in zip(parts, (t_deform, t_splat, t_torso, t_frame), strict=True):
                    parts[key].append(value)
        ms = {key: 1000 * statistics.median(values) for key, values in parts.items()}
        print(f"| {size} | {ms['deform']:.1f} | {ms['splat']:.1f} | {ms['torso']:.1f} | {ms['frame']:.1f} | "
              f"{1000 / ms['frame']:.1f} |", flush=True)

    if args.steps > 0:
        _bench_steps(args, avatar, sync)
    return 0


def _bench_steps(args, avatar, sync) -> None:
    from synctalk.train.stages import HeadStage
    from synctalk.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(avatar.ds.root, Path(tmp) / "ws", avatar.cfg, device=args.device, progress=False)
        trainer.head.load_state_dict(avatar.head.state_dict())
        trainer.head.train()
        stage = HeadStage(trainer.context)
        optimizer, _ = stage.optimizer()
        stage.optim = optimizer
        sampler = stage.sampler()
        parts: dict[str, list[float]] = {"batch": [], "forward": [], "backward": [], "optimiser": []}
        try:
            for step in range(args.steps + 3):
                t_batch, batch = _timed(sync, sampler.sample)
                t_forward, losses = _timed(sync, stage.losses, batch, 1000 + step)
                optimizer.zero_grad(set_to_none=True)
                t_backward, _ = _timed(sync, sum(losses.values()).backward)
                t_opt, _ = _timed(sync, optimizer.step)
                stage.after_step(1000 + step + 1)
                if step >= 3:
                    for key, value in zip(parts, (t_batch, t_forward, t_backward, t_opt), strict=True):
                        parts[key].append(value)
        finally:
            sampler.close()
    ms = {key: 1000 * statistics.median(values) for key, values in parts.items()}
    side = avatar.ds.width
    print(f"\nhead-stage training step at {side}² (median of {args.steps}):\n")
    print("| batch ms | forward + losses ms | backward ms | optimiser ms | step ms |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {ms['batch']:.1f} | {ms['forward']:.1f} | {ms['backward']:.1f} | {ms['optimiser']:.1f} | "
          f"{sum(ms.values()):.1f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
