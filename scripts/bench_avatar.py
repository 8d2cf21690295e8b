#!/usr/bin/env python
"""Rendering speed of a trained avatar: frames/s per resolution (full frame: head + torso + plate, and with the
portrait paste-back), and streaming latency.

    python scripts/bench_avatar.py WORKSPACE                          # sizes 64 128 256, 10 frames each
    python scripts/bench_avatar.py WORKSPACE --sizes 128 256 512 --frames 20 --stream-audio speech.wav

Frames are rendered from the subject's training poses with its own audio features (first frame not timed: it
builds caches). Streaming: `synctalk stream` on ``--stream-audio`` read at real-time pace, at ``--stream-size``.
Prints a markdown table (paste into docs/benchmarks.md with the command line).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--portrait", action="store_true", help="also time the portrait paste-back at each size")
    parser.add_argument("--stream-audio", type=Path, help="also stream this file and report latency")
    parser.add_argument("--stream-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from synctalk.inference.avatar import Avatar
    from synctalk.inference.drive import make_drive
    from synctalk.inference.video import PortraitCompositor, RenderOptions, render_frames

    avatar = Avatar.load(args.workspace, args.device)
    features = avatar.subject.features.cpu().numpy()
    n = args.frames + 1
    drive = make_drive(n, avatar.subject.poses.cpu().numpy(), avatar.subject.expressions.cpu().numpy(),
                       avatar.head.expression_names, avatar.subject.train, avatar.fps)
    portrait = PortraitCompositor(avatar, RenderOptions(portrait=True)) if args.portrait else None
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"workspace {args.workspace}, subject {avatar.ds.width}x{avatar.ds.height}, device {device}\n")
    print("| render side | frames/s | ms/frame |" + (" portrait frames/s |" if portrait else ""))
    print("|---:|---:|---:|" + ("---:|" if portrait else ""))
    for size in args.sizes:
        render_frames(avatar, features, drive, [0], size)
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        render_frames(avatar, features, drive, list(range(1, n)), size)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.frames
        row = f"| {size} | {1 / seconds:.2f} | {1000 * seconds:.0f} |"
        if portrait is not None:
            start = time.perf_counter()
            render_frames(avatar, features, drive, list(range(1, n)), size, portrait)
            row += f" {args.frames / (time.perf_counter() - start):.2f} |"
        print(row, flush=True)
    if args.stream_audio:
        from synctalk.inference.stream import stream

        out = Path("/tmp") / f"bench_stream_{np.random.default_rng().integers(1 << 30)}.rgb"
        report = stream(args.workspace, str(args.stream_audio), str(out), RenderOptions(size=args.stream_size),
                        device=args.device)
        out.unlink(missing_ok=True)
        print(f"\nstream at {args.stream_size} px: {report.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
