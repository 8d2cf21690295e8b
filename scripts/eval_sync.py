#!/usr/bin/env python
"""Offset test of the sync model on real clips (issue 5's acceptance experiment).

1. Train on the first 80% of the Macron clip; score its last 20% (never seen): distance vs offset over
   -15..+15 frames, then the same part with its audio delayed by 4 frames (expected offset -4).
2. Train on Macron (all) + the German anchor clip; score Andrew (a person never seen).

Writes OUT/sync_offsets.json and OUT/sync_offsets.png and prints a table. Needs ../shared/data (or --data).

    python scripts/eval_sync.py --out docs/figures --steps 1500
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from synctalk.audio.score import offset_curve_plot, score_clip
from synctalk.audio.sync_data import clip_from_video
from synctalk.audio.sync_model import load_sync_model
from synctalk.audio.sync_train import train_sync_model
from synctalk.config import SyncTrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("sync_eval"))
    parser.add_argument("--work", type=Path, default=None, help="checkpoints (default: OUT/work)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--budget-minutes", type=float, default=0.0)
    parser.add_argument("--skip-cross", action="store_true", help="only the Macron held-out test")
    args = parser.parse_args()
    video = args.data / "video"
    work = args.work or args.out / "work"
    cfg = SyncTrainConfig(max_steps=args.steps, width=args.width, eval_every=250)

    macron = clip_from_video(video / "macron_fr_50s_30fps.mp4", progress=True)
    cut = int(round(0.8 * len(macron)))
    train, held = macron.subset(0, cut, "macron[:80%]"), macron.subset(cut, len(macron), "macron[80%:]")
    delayed = macron.delayed(4).subset(cut, len(macron), "macron[80%:] audio +4 frames")
    results: dict = {"meta": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "machine": platform.processor() or platform.machine(), "commit": _commit(),
                              "config": vars(cfg)}}

    report = train_sync_model([train], work / "macron80.pt", cfg, held_out=[held], budget_minutes=args.budget_minutes)
    model = load_sync_model(report.checkpoint)
    scores = {"held-out": score_clip(model, held), "held-out, audio delayed 4 frames": score_clip(model, delayed)}
    for extra in (-4, 2):  # more checks: audio early, a smaller delay
        scores[f"held-out, audio delayed {extra} frames"] = score_clip(
            model, macron.delayed(extra).subset(cut, len(macron)))
    results["macron_held_out"] = {"train": {"steps": report.steps, "seconds": round(report.seconds, 1),
                                            "samples_per_s": round(report.samples_per_s, 1),
                                            "held_out_history": report.history},
                                  **{name: s.summary() for name, s in scores.items()}}
    offset_curve_plot(scores, args.out / "sync_offsets.png", "trained on Macron [0, 80%), scored on [80%, 100%)")

    if not args.skip_cross:
        anchor = clip_from_video(video / "anchor_de_20s_25fps.mp4", progress=True)
        andrew = clip_from_video(video / "andrew_25s_30fps_silent.mp4", args.data / "audio" / "andrew_25s.wav",
                                 progress=True)
        t0 = time.perf_counter()
        cross = train_sync_model([macron, anchor], work / "macron_anchor.pt", cfg, budget_minutes=args.budget_minutes)
        cross_model = load_sync_model(cross.checkpoint)
        cross_scores = {"andrew (unseen person)": score_clip(cross_model, andrew),
                        "andrew, audio delayed 4 frames": score_clip(cross_model, andrew.delayed(4))}
        results["cross_person"] = {"train": {"steps": cross.steps, "seconds": round(time.perf_counter() - t0, 1)},
                                   **{name: s.summary() for name, s in cross_scores.items()}}
        offset_curve_plot(cross_scores, args.out / "sync_offsets_cross.png",
                          "trained on Macron + anchor, scored on Andrew")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sync_offsets.json").write_text(json.dumps(results, indent=1))
    print(f"{'case':45s} {'offset':>6s} {'LSE-D':>7s} {'LSE-C':>7s}")
    for section in ("macron_held_out", "cross_person"):
        for name, value in results.get(section, {}).items():
            if name != "train":
                print(f"{name:45s} {value['offset_frames']:+6d} {value['lse_d']:7.3f} {value['lse_c']:7.3f}")
    print(f"wrote {args.out / 'sync_offsets.json'}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
