#!/usr/bin/env python
"""Does the rendered mouth follow new speech? Render audio files with a trained workspace and measure.

    python scripts/eval_render.py WORKSPACE --audio a.flac b.wav [--espeak "Some text."] -o OUT [--size 128]

Per audio file: the mp4 (`synctalk render`), its frame count against the audio duration, the muxed audio's
length, the MediaPipe jawOpen of every rendered frame against the speech loudness (RMS per frame, dB) as a
correlation and a plot (OUT/<name>_mouth.png, no frames in it); also the jawOpen the audio predicts (the mouth
stage's predictor, else the head's own mouth head on its audio codes), against the loudness and against the rendered
jawOpen (which part falls short: the audio → blendshape prediction on this voice, or the drawing of it);
LSE-D / LSE-C / offset of the render from the subject's sync judge (never trained on these audio files), and a
sheet of 8 frames (OUT/<name>_sheet.png; it shows the subject's face: keep it out of the repository when the
subject is real footage). Writes OUT/render_eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def loudness_db(samples: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    per = 16000 / fps
    rms = [np.sqrt(np.mean(samples[int(i * per):int((i + 1) * per)] ** 2) + 1e-10) for i in range(n_frames)]
    return 20 * np.log10(np.asarray(rms))


def espeak(text: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng into ``path`` (a WAV file)."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        raise SystemExit("--espeak needs espeak-ng (apt install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


def main() -> int:
    from synctalk.models.mouth import DEFAULT_GAIN

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--audio", type=Path, nargs="+", default=[])
    parser.add_argument("--espeak", nargs="+", default=[], metavar="TEXT",
                        help="sentences spoken by espeak-ng (Debian package espeak-ng) and rendered like --audio")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--size", type=int)
    parser.add_argument("--portrait", action="store_true")
    parser.add_argument("--mouth-gain", type=float, default=DEFAULT_GAIN, help="as in `synctalk render`")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synctalk.audio.score import load_judge, sync_score
    from synctalk.data.contract import BLENDSHAPE_NAMES
    from synctalk.eval.metrics import landmarks_of_frames
    from synctalk.inference.avatar import Avatar
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.images import write_image
    from synctalk.io.media import load_audio, probe, read_frames
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES

    avatar = Avatar.load(args.workspace)
    avatar.mouth_gain = args.mouth_gain
    args.out.mkdir(parents=True, exist_ok=True)
    for k, text in enumerate(args.espeak):
        args.audio.append(espeak(text, args.out / f"espeak_{k}.wav"))
    if not args.audio:
        parser.error("give --audio files or --espeak sentences")
    results = {}
    for audio in args.audio:
        name = audio.stem
        video = args.out / f"{name}.mp4"
        options = RenderOptions(size=args.size, portrait=args.portrait, mouth_gain=args.mouth_gain)
        report = render_video(args.workspace, audio, video, options)
        frames = list(read_frames(video))
        samples = load_audio(audio, 16000)
        muxed = load_audio(video, 16000)
        _, found, blend = landmarks_of_frames(frames, report.fps)
        jaw = blend[:, BLENDSHAPE_NAMES.index("jawOpen")]
        loud = loudness_db(samples, len(frames), report.fps)
        ok = found & np.isfinite(jaw)
        corr = float(np.corrcoef(jaw[ok], loud[ok])[0, 1]) if ok.sum() > 2 else float("nan")
        shapes = avatar.predicted_mouth(avatar.audio_features(samples, len(frames)), range(len(frames)))
        predicted = None if shapes is None else shapes[:, MOUTH_BLENDSHAPE_NAMES.index("jawOpen")]
        judge_path = Path(json.loads((Path(args.workspace) / "train_log.json").read_text())["subject"]) / "sync.pt"
        sync = sync_score(video, model=load_judge(judge_path)).summary() if judge_path.is_file() else None
        info = probe(video)
        results[name] = {
            "audio_s": round(len(samples) / 16000, 3), "frames": len(frames), "video_s": round(len(frames) /
                                                                                               report.fps, 3),
            "muxed_audio_s": round(len(muxed) / 16000, 3), "size": [info.width, info.height],
            "render_fps": round(report.render_fps, 3), "face_found": float(found.mean()),
            "jaw_open_vs_loudness_r": round(corr, 3), "jaw_open_mean": float(np.nanmean(jaw)),
            "jaw_open_std": float(np.nanstd(jaw)), "sync": sync}
        if predicted is not None:
            results[name]["predicted_jaw_open_vs_loudness_r"] = round(float(np.corrcoef(predicted, loud)[0, 1]), 3)
            results[name]["rendered_vs_predicted_jaw_open_r"] = round(
                float(np.corrcoef(jaw[ok], predicted[ok])[0, 1]) if ok.sum() > 2 else float("nan"), 3)
        t = np.arange(len(frames)) / report.fps
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.plot(t, jaw, label="rendered jawOpen (MediaPipe)", color="C1")
        if predicted is not None:  # standardised units, mapped onto the rendered curve's mean and spread
            scaled = (predicted - predicted.mean()) / (predicted.std() + 1e-9) * np.nanstd(jaw) + np.nanmean(jaw)
            ax.plot(t, scaled, label="jawOpen the audio predicts (rescaled)", color="C2", alpha=0.7)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("jawOpen")
        twin = ax.twinx()
        twin.plot(t, loud, label="speech loudness (dB)", color="C0", alpha=0.5)
        twin.set_ylabel("loudness (dB)")
        ax.set_title(f"{name}: rendered mouth vs speech (r = {corr:.2f})")
        fig.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(args.out / f"{name}_mouth.png", dpi=100)
        plt.close(fig)
        picks = np.linspace(0, len(frames) - 1, 8).round().astype(int)
        write_image(args.out / f"{name}_sheet.png", np.concatenate([frames[k] for k in picks], 1))
        print(name, json.dumps(results[name]), flush=True)
    (args.out / "render_eval.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
