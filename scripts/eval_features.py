#!/usr/bin/env python
"""Linear probe of audio features: how well does each backend predict mouth opening on held-out frames?

For a preprocessed subject (its `audio_features.npy` from the `ave` backend, trained on the subject's own
training frames), fit a ridge regression from features to the jawOpen blendshape on the training split and
report R² on the validation split, for `ave` and for the raw `mel` window (the same audio, no learned encoder).

    synctalk preprocess macron.mp4 -o subj --config cpu preprocess.val_fraction=0.2
    python scripts/eval_features.py subj [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from synctalk.audio.features import compute_features
from synctalk.data import SubjectDataset
from synctalk.data.contract import BLENDSHAPE_NAMES


def probe(features: np.ndarray, target: np.ndarray, train: list[int], val: list[int]) -> dict:
    """Ridge regression (regularisation chosen by cross-validation on the training frames) → R² on val."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.reshape(len(features), -1)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    model.fit(x[train], target[train])
    return {"r2_val": round(float(r2_score(target[val], model.predict(x[val]))), 4),
            "r2_train": round(float(r2_score(target[train], model.predict(x[train]))), 4),
            "alpha": float(model[-1].alpha_), "dims": int(x.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path)
    parser.add_argument("--target", default="jawOpen", choices=BLENDSHAPE_NAMES)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ds = SubjectDataset(args.subject, require=("audio", "landmarks", "audio_features", "splits"))
    target = np.asarray(ds.blendshapes[:, BLENDSHAPE_NAMES.index(args.target)])
    train, val = ds.split("train"), ds.split("val")
    info = json.loads((args.subject / "audio_features.json").read_text())
    results = {}
    if info["backend"] == "ave":
        results["ave"] = probe(np.asarray(ds.audio_features), target, train, val)
    mel = compute_features("mel", ds.audio(), ds.sample_rate_hz, len(ds), ds.fps).features
    results["mel"] = probe(mel, target, train, val)
    results["meta"] = {"subject": str(args.subject), "target": args.target, "train_frames": len(train),
                       "val_frames": len(val), "features": info}
    print(f"{'backend':8s} {'dims':>6s} {'R² train':>9s} {'R² val':>8s}")
    for name in ("ave", "mel"):
        if name in results:
            r = results[name]
            print(f"{name:8s} {r['dims']:6d} {r['r2_train']:9.3f} {r['r2_val']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
