"""`synctalk audio-inspect FILE`: what a driving track says, before rendering with it.

One PNG, time along x: the waveform with its per-frame loudness and voicing, the visemes the phone decoder hears
(synctalk.audio.phones; one row per viseme), and the mouth opening they ask for (each viseme's jaw opening,
:data:`VISEME_OPENING`, weighted by its activation). With a workspace, also the jawOpen its own audio path
predicts (the mouth stage's predictor, else the head's mouth head, in standardised units). Long silences, music or
another language show up as flat or noisy rows before any frame is rendered.

    report = inspect_audio("speech.wav", "speech.png", fps=25, workspace="runs/me")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AudioReport", "VISEME_OPENING", "inspect_audio", "mouth_opening"]

VISEME_OPENING = {"sil": 0.0, "PP": 0.0, "FF": 0.15, "TH": 0.3, "DD": 0.3, "kk": 0.35, "CH": 0.35, "SS": 0.2,
                  "nn": 0.3, "RR": 0.4, "aa": 1.0, "E": 0.7, "ih": 0.5, "oh": 0.8, "ou": 0.45}
"""How far each viseme opens the jaw (0 closed, 1 an open 'a'): a fixed articulatory scale."""


@dataclass
class AudioReport:
    path: Path
    image: Path
    duration_s: float
    frames: int
    fps: float
    speech_fraction: float           # frames whose activations are mostly not 'sil'
    opening: np.ndarray              # [N] viseme-based mouth opening in [0, 1]
    workspace_jaw: np.ndarray | None  # [N] the workspace's predicted jawOpen (standardised) or None

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.duration_s:.2f} s, {self.frames} frames at {self.fps:g} fps, speech in "
               f"{100 * self.speech_fraction:.0f}% of the frames, mean mouth opening {self.opening.mean():.2f}"]
        if self.workspace_jaw is not None:
            r = np.corrcoef(self.opening, self.workspace_jaw)[0, 1] if self.opening.std() > 0 and \
                self.workspace_jaw.std() > 0 else float("nan")
            out.append(f"workspace jawOpen (standardised): mean {self.workspace_jaw.mean():+.2f}, spread "
                       f"{self.workspace_jaw.std():.2f}, correlation with the viseme opening {r:.2f}")
        out.append(f"picture: {self.image}")
        return out


def mouth_opening(features: np.ndarray) -> np.ndarray:
    """[N] mouth opening from phones features [N, 17] (viseme activations · VISEME_OPENING)."""
    from synctalk.audio.phones import VISEMES

    weights = np.array([VISEME_OPENING[v] for v in VISEMES], np.float32)
    return features[:, :len(VISEMES)] @ weights


def _workspace_jaw(workspace: Path, samples: np.ndarray, n: int, device) -> np.ndarray | None:
    from synctalk.inference.avatar import Avatar
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES

    avatar = Avatar.load(workspace, device)
    features = avatar.audio_features(samples, n)
    shapes = avatar.predicted_mouth(features, range(n))
    return None if shapes is None else shapes[:, MOUTH_BLENDSHAPE_NAMES.index("jawOpen")]


def inspect_audio(path: str | Path, image: str | Path, fps: float = 25.0, workspace: str | Path | None = None,
                  device="cpu") -> AudioReport:
    """Decode ``path`` (any file ffmpeg reads), draw the picture into ``image`` (PNG) and return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synctalk.audio.phones import VISEMES, phone_features
    from synctalk.io.atomic import atomic_path
    from synctalk.io.media import load_audio

    path, image = Path(path), Path(image)
    samples = load_audio(path, 16000)
    n = max(1, int(round(len(samples) / 16000 * fps)))
    features = phone_features(samples, n, fps)
    opening = mouth_opening(features)
    jaw = _workspace_jaw(Path(workspace), samples, n, device) if workspace is not None else None

    t = (np.arange(n) + 0.5) / fps
    rows = 4 if jaw is not None else 3
    fig, axes = plt.subplots(rows, 1, figsize=(max(8.0, min(24.0, len(samples) / 16000 * 1.2)), 2.2 * rows + 1),
                             sharex=True, gridspec_kw={"height_ratios": [1, 2.2, 1] + ([1] if jaw is not None else [])})
    step = max(1, len(samples) // 20000)
    axes[0].plot(np.arange(0, len(samples), step) / 16000, samples[::step], color="0.6", lw=0.5)
    axes[0].plot(t, features[:, -2], color="C3", lw=1, label="loudness")
    axes[0].plot(t, features[:, -1], color="C0", lw=1, label="voicing")
    axes[0].set(ylabel="waveform", ylim=(-1, 1.05))
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    axes[1].imshow(features[:, :len(VISEMES)].T, aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=1,
                   extent=(0, n / fps, -0.5, len(VISEMES) - 0.5), interpolation="nearest")
    axes[1].set_yticks(range(len(VISEMES)), VISEMES, fontsize=7)
    axes[1].set(ylabel="viseme")
    axes[2].plot(t, opening, color="C2", lw=1.2)
    axes[2].set(ylabel="mouth opening", ylim=(0, 1.05))
    if jaw is not None:
        axes[3].plot(t, jaw, color="C4", lw=1.2)
        axes[3].set(ylabel="workspace jawOpen\n(standardised)")
    axes[-1].set(xlabel="time (s)", xlim=(0, n / fps))
    axes[0].set_title(f"{path.name}: {len(samples) / 16000:.2f} s")
    fig.tight_layout()
    with atomic_path(image) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    speech = float((features[:, 0] < 0.5).mean())
    return AudioReport(path, image, len(samples) / 16000, n, fps, speech, opening, jaw)
