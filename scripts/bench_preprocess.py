#!/usr/bin/env python
"""Preprocessing throughput: frames/s per step and in total, and peak memory, on real clips.

    python scripts/bench_preprocess.py                       # the 512x512 test clips in ../shared/data/video
    python scripts/bench_preprocess.py talk.mp4 --workers 4 --json out.json
    python scripts/bench_preprocess.py macron.mp4 --audio-backend phones   # no sync model to train

Every step is forced to run (nothing cached). Peak RSS is the maximum resident memory of this process and,
separately, of its largest child (ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SYNCTALK_TEST_DATA", REPO.parent / "shared" / "data"))
DEFAULT_CLIPS = ["video/may_5s_25fps.mp4", "video/anchor_de_20s_25fps.mp4", "video/macron_fr_50s_30fps.mp4"]


def metadata(workers: int) -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {"commit": commit.stdout.strip() or "unknown", "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "workers": workers,
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}


def bench_clip(video: Path, workers: int, audio: Path | None, audio_backend: str | None = None) -> dict:
    from dataclasses import replace

    from preprocess.run import preprocess
    from synctalk.config import PreprocessConfig, SyncTalkConfig

    cfg = PreprocessConfig(workers=workers)
    full = SyncTalkConfig()
    if audio_backend:
        full = replace(full, audio=replace(full.audio, backend=audio_backend))
    with tempfile.TemporaryDirectory() as tmp:
        report = preprocess(video, Path(tmp) / "subject", cfg, audio=audio, force=("all",), progress=False,
                            full_config=full)
        meta = json.loads((Path(tmp) / "subject" / "meta.json").read_text())
    steps = {s.name: {"seconds": s.seconds, "fps": report.n_frames / s.seconds if s.seconds else None}
             for s in report.steps if s.status == "ran"}
    preprocess_s = sum(s["seconds"] for s in steps.values())
    return {"clip": video.name, "frames": report.n_frames, "steps": steps, "steps_total_s": preprocess_s,
            "total_fps": report.n_frames / preprocess_s, "wall_s": report.seconds,
            "faces_detected_fraction": meta["steps"]["landmarks"]["faces_detected_fraction"],
            "pose": meta.get("pose", {}),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path, help="clips (default: the 512x512 test clips)")
    parser.add_argument("--audio", type=Path, help="speech for a silent clip (with one video argument)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--audio-backend", help="audio.backend (default: the config's, which may train a sync model)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    videos = args.videos or [DATA / c for c in DEFAULT_CLIPS if (DATA / c).is_file()]
    if not videos:
        print(f"no clips given and none found under {DATA}", file=sys.stderr)
        return 2
    os.environ.setdefault("SYNCTALK_MODELS", str(DATA / "models"))
    results = {"meta": metadata(args.workers), "clips": [bench_clip(v, args.workers, args.audio, args.audio_backend)
                                                         for v in videos]}
    step_names = list(results["clips"][0]["steps"])
    print(f"preprocess throughput (frames/s), {results['meta']}")
    print("| clip | frames | " + " | ".join(step_names) + " | total frames/s | wall s | peak RSS MB |")
    print("|---|---:|" + "---:|" * len(step_names) + "---:|---:|---:|")
    for clip in results["clips"]:
        cells = [f"{clip['steps'][s]['fps']:.1f}" if s in clip["steps"] else "" for s in step_names]
        print(f"| {clip['clip']} | {clip['frames']} | " + " | ".join(cells)
              + f" | {clip['total_fps']:.1f} | {clip['wall_s']:.1f} | {clip['peak_rss_mb']:.0f} |")
    print("\nHead-Sync Stabilizer (rigid landmarks; jitter = RMS 2nd difference of head angles, deg/frame^2)")
    print("| clip | faces found | focal px | reprojection px raw -> stabilised | jitter raw -> stabilised | "
          "jitter reduction |")
    print("|---|---:|---:|---:|---:|---:|")
    for clip in results["clips"]:
        pose = clip["pose"]
        if pose:
            print(f"| {clip['clip']} | {clip['faces_detected_fraction']:.1%} | {pose['focal_px']:.0f} | "
                  f"{pose['reprojection_px_raw']:.3f} -> {pose['reprojection_px']:.3f} | "
                  f"{pose['jitter_deg_raw']:.4f} -> {pose['jitter_deg']:.4f} | "
                  f"{pose['jitter_deg_raw'] / pose['jitter_deg']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
