"""Render a workspace's frames from their own pose and audio and compare two such renders (e.g. before and after a
refactor, from the same checkpoint).

    PYTHONPATH=/tmp/base python scripts/compare_renders.py render WS --frames 0 50 100 -o before.npz
    python scripts/compare_renders.py render WS --frames 0 50 100 -o after.npz
    python scripts/compare_renders.py compare before.npz after.npz          # max |difference| per frame and map

Uses only ``synctalk.inference.avatar.Avatar`` (load, audio_codes, render), so older trees can run it too.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def render(args) -> None:
    import torch

    import synctalk
    from synctalk.inference.avatar import Avatar
    from synctalk.models.frame import FrameInputs

    avatar = Avatar.load(args.workspace, device=args.device)
    data = avatar.subject
    arrays = {}
    with torch.no_grad():
        for frame in args.frames:
            inputs = FrameInputs(c2w=data.poses[frame], audio_code=avatar.audio_codes(data.features, [frame])[0],
                                 expression=data.expressions[frame], torso_pose=data.pose_vectors[frame],
                                 torso_track=data.torso_tracks[frame], appearance_frame=frame)
            out = avatar.render(inputs, frame, size=args.size)
            arrays[f"rgb_{frame}"] = out.rgb.cpu().numpy()
            arrays[f"head_alpha_{frame}"] = out.head_alpha.cpu().numpy()
            if out.torso_alpha is not None:
                arrays[f"torso_alpha_{frame}"] = out.torso_alpha.cpu().numpy()
    np.savez(args.out, **arrays)
    print(f"{len(args.frames)} frames from {synctalk.__file__} -> {args.out}")


def compare(args) -> None:
    a, b = np.load(args.a), np.load(args.b)
    if sorted(a.files) != sorted(b.files):
        sys.exit(f"the files hold different renders: {sorted(a.files)} vs {sorted(b.files)}")
    worst = 0.0
    print("| render | max abs diff |\n|---|---:|")
    for name in sorted(a.files):
        diff = float(np.abs(a[name].astype(np.float64) - b[name]).max())
        worst = max(worst, diff)
        print(f"| {name} | {diff:.3g} |")
    print(f"\nworst: {worst:.3g} (tolerance {args.tolerance:g})")
    sys.exit(0 if worst <= args.tolerance else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("render")
    one.add_argument("workspace")
    one.add_argument("--frames", type=int, nargs="+", required=True)
    one.add_argument("--size", type=int, default=None)
    one.add_argument("--device", default="cpu")
    one.add_argument("-o", "--out", required=True)
    two = sub.add_parser("compare")
    two.add_argument("a")
    two.add_argument("b")
    two.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    render(args) if args.command == "render" else compare(args)


if __name__ == "__main__":
    main()
