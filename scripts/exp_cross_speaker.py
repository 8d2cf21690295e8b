#!/usr/bin/env python
"""Across people: does a mouth predictor fitted on one subject read another person's mouth from that person's audio?

For each audio backend, fit the mouth predictor (`synctalk.models.mouth.MouthPredictor`, the mouth stage's ridge over
a window of features, spread matched on held-out frames) from SOURCE's audio features to SOURCE's jawOpen on its
training frames, then predict TARGET's jawOpen from TARGET's audio with the same backend (ave: SOURCE's sync model)
and correlate with TARGET's measured jawOpen (its face-landmarker blendshapes). Also printed: the same on SOURCE's
held-out frames, the prediction's spread over the real one (1 = calibrated), and for phones how much of the loud
audio the English phone decoder calls silence (what degrades on other languages).

    synctalk preprocess macron.mp4 -o macron --config cpu          # SOURCE (ave needs its sync.pt)
    synctalk preprocess anchor_de.mp4 -o anchor --config cpu audio.backend=phones
    python scripts/exp_cross_speaker.py macron anchor [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synctalk.audio import phones
from synctalk.audio.features import compute_features
from synctalk.data import SubjectDataset
from synctalk.data.contract import BLENDSHAPE_NAMES
from synctalk.models.mouth import MouthPredictor


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def features_of(ds: SubjectDataset, backend: str, sync_checkpoint: Path) -> np.ndarray:
    return compute_features(backend, ds.audio(), ds.sample_rate_hz, len(ds), ds.fps,
                            checkpoint=sync_checkpoint if "ave" in backend else None).features


def loud_frames_called_silence(features: np.ndarray) -> float:
    """Fraction of frames louder than -30 dBFS whose strongest viseme is `sil`."""
    loudness = features[:, len(phones.VISEMES)]
    floor, top = phones.LOUDNESS_FLOOR_DB, phones.LOUDNESS_TOP_DB
    loud = loudness > (-30.0 - floor) / (top - floor)
    return float((features[loud, :len(phones.VISEMES)].argmax(1) == 0).mean()) if loud.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="subject the predictor is fitted on")
    parser.add_argument("target", type=Path, help="another person's subject: its audio drives, its face judges")
    parser.add_argument("--backends", nargs="+", default=["phones", "ave", "mel", "phones+ave"])
    parser.add_argument("--sync-model", type=Path, help="for ave: default SOURCE/sync.pt")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    jaw = BLENDSHAPE_NAMES.index("jawOpen")
    source = SubjectDataset(args.source, require=("audio", "landmarks", "splits"))
    target = SubjectDataset(args.target, require=("audio", "landmarks", "splits"))
    train, val = source.split("train"), source.split("val")
    faced = sorted(target.split("train") + target.split("val"))
    source_jaw = np.asarray(source.blendshapes[:, jaw], np.float64)[:, None]
    target_jaw = np.asarray(target.blendshapes[faced, jaw], np.float64)
    sync = args.sync_model or args.source / "sync.pt"
    rows = {}
    for backend in args.backends:
        if "ave" in backend and not sync.is_file():
            rows[backend] = {"skipped": f"{sync} is missing"}
            continue
        src = features_of(source, backend, sync)
        tgt = features_of(target, backend, sync)
        predictor, report = MouthPredictor.fit(src, train, source_jaw[train], val, source_jaw[val])
        own = predictor.predict(src, val)[:, 0]
        other = predictor.predict(tgt, faced)[:, 0]
        rows[backend] = {"source_val_r": round(pearson(own, source_jaw[val, 0]), 3),
                         "source_val_spread": round(float(own.std() / source_jaw[val, 0].std()), 3),
                         "target_r": round(pearson(other, target_jaw), 3),
                         "target_spread": round(float(other.std() / target_jaw.std()), 3),
                         "scale": round(float(report["scale"][0]), 3)}
        if backend == "phones":
            rows["phones"]["source_loud_called_sil"] = round(loud_frames_called_silence(src), 3)
            rows["phones"]["target_loud_called_sil"] = round(loud_frames_called_silence(tgt), 3)
            loud = len(phones.VISEMES)   # reference: each person's own loudness against their own jawOpen
            rows["loudness"] = {"source_val_r": round(pearson(src[val, loud], source_jaw[val, 0]), 3),
                                "source_val_spread": float("nan"), "target_r": round(pearson(tgt[faced, loud],
                                                                                             target_jaw), 3),
                                "target_spread": float("nan")}
    print(f"source {args.source} ({len(train)} train / {len(val)} val frames) -> target {args.target} "
          f"({len(faced)} frames with a face); jawOpen")
    print(f"{'backend':12s} {'own val r':>9s} {'own spread':>10s} {'target r':>9s} {'target spread':>13s}")
    for backend, row in rows.items():
        if "skipped" in row:
            print(f"{backend:12s} skipped: {row['skipped']}")
            continue
        print(f"{backend:12s} {row['source_val_r']:9.3f} {row['source_val_spread']:10.3f} {row['target_r']:9.3f} "
              f"{row['target_spread']:13.3f}")
    if "phones" in rows and "skipped" not in rows["phones"]:
        print(f"phones: loud frames (> -30 dBFS) the English decoder calls silence: source "
              f"{rows['phones']['source_loud_called_sil']:.0%}, target {rows['phones']['target_loud_called_sil']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"source": str(args.source), "target": str(args.target), "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
