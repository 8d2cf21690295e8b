#!/usr/bin/env python
"""Sync-model speed: training samples/s (video windows per second, each with 2 audio windows) and ave feature
extraction frames/s, per tower width and device. Synthetic inputs of the real shapes; median of repeats.

    python scripts/bench_sync.py [--widths 0.25 0.5 1.0] [--batch 64] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch

from synctalk.audio.sync_model import SyncModel, SyncModelConfig
from synctalk.audio.sync_train import contrastive_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(width: float, batch: int, device: torch.device, repeats: int, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    model = SyncModel(SyncModelConfig(width, width)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    data = {"video": torch.rand(batch, 5, 48, 96), "audio": torch.randn(batch, 80, 16),
            "negative_audio": torch.randn(batch, 80, 16),
            "clip_time": torch.stack([torch.zeros(batch, dtype=torch.long), torch.arange(batch) * 20], 1),
            "negative_offset": torch.full((batch,), 7)}
    data = {k: v.to(device) for k, v in data.items()}
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        loss, _ = contrastive_loss(model, data, 5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.eval()
    mel = torch.randn(256, 80, 16, device=device)
    infer = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            model.audio(mel)
            _sync(device)
            if i >= warmup:
                infer.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"width": width, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "batch": batch, "step_ms": round(1000 * step, 1),
            "spread_ms": [round(1000 * min(times), 1), round(1000 * max(times), 1)],
            "train_samples_per_s": round(batch / step, 1),
            "ave_frames_per_s": round(256 / statistics.median(infer), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=str)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [bench(w, args.batch, device, args.repeats) for w in args.widths]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": commit}
    print(f"# sync model speed: {meta}")
    print("| width | params (M) | batch | step ms (min-max) | train samples/s | ave features frames/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['width']} | {r['params_M']} | {r['batch']} | {r['step_ms']} ({r['spread_ms'][0]}-"
              f"{r['spread_ms'][1]}) | {r['train_samples_per_s']} | {r['ave_frames_per_s']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
