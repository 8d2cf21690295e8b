"""Per-frame audio features for the head model, one backend per config value (`audio.backend`).

Every backend returns `[N, ...]` float32 with row `i` describing the audio around video frame `i` (centred on
the frame's centre time `(i + 0.5) / fps`; sample 0 of the audio = the start of frame 0):

| backend    | shape          | what                                                                          |
|------------|----------------|-------------------------------------------------------------------------------|
| `ave`      | `[N, 512]`     | the sync model's audio tower on the frame's 0.2 s mel window                  |
| `mel`      | `[N, 80, 16]`  | the raw normalised mel window (no learned encoder: the ablation baseline)     |
| `hubert`   | `[N, 1024]`    | facebook/hubert-large-ls960-ft last hidden state (50 Hz) at frame centres  |
| `wav2vec2` | `[N, 768]`     | facebook/wav2vec2-base-960h, likewise                                         |
| `phones`   | `[N, 17]`      | visemes, loudness, voicing from a phone decoder (synctalk.audio.phones)      |
| `A+B`      | `[N, dA + dB]` | 1-D backends side by side, e.g. `phones+ave` (the phones first)              |

The transformers backends need `pip install transformers` and the model folder (config.json + weights) in the
asset cache: `$SYNCTALK_MODELS/<repo name>/`; a clear error says which files to put where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synctalk.audio import mel as melspec
from synctalk.errors import AssetError, MediaError, UserInputError

BACKENDS = ("ave", "mel", "hubert", "wav2vec2", "phones")
TRANSFORMERS_MODELS = {"hubert": "facebook/hubert-large-ls960-ft", "wav2vec2": "facebook/wav2vec2-base-960h"}
TRANSFORMERS_RATE_HZ = 50.0   # one hidden state per 20 ms
TRANSFORMERS_CHUNK_S = 30.0   # long audio runs in chunks with context on both sides
TRANSFORMERS_CONTEXT_S = 2.0


def backend_parts(backend: str) -> tuple[str, ...]:
    """The single backends of a backend name: `phones+ave` → ("phones", "ave"); `ave` → ("ave",)."""
    parts = tuple(backend.split("+"))
    unknown = [part for part in parts if part not in BACKENDS]
    if unknown or not parts:
        raise UserInputError(f"unknown audio backend '{backend}'; choose one of {', '.join(BACKENDS)} or a "
                             f"combination of them such as phones+ave")
    if len(set(parts)) != len(parts):
        raise UserInputError(f"audio backend '{backend}' names a backend twice")
    if len(parts) > 1 and "mel" in parts:
        raise UserInputError(f"audio backend '{backend}': mel windows are 2-D [80, 16] and cannot be combined; "
                             "combine 1-D backends (phones, ave, hubert, wav2vec2)")
    return parts


@dataclass
class AudioFeatures:
    features: np.ndarray   # [N, ...] float32
    info: dict             # written to audio_features.json: backend + parameters


def check_audio(samples: np.ndarray, sample_rate_hz: int, source: str = "audio") -> np.ndarray:
    """Mono 16 kHz float32; errors for empty audio, warnings for silence are the caller's business."""
    samples = melspec.to_mono_16k(samples, sample_rate_hz)
    if samples.size == 0:
        raise MediaError(f"{source}: the audio is empty (0 samples); give a file with speech in it")
    return samples


def compute_features(backend: str, samples: np.ndarray, sample_rate_hz: int, n_frames: int, fps: float,
                     model=None, checkpoint: str | Path | None = None, batch: int = 256,
                     device: str | torch.device = "cpu", progress: bool = False) -> AudioFeatures:
    """Features of `samples` for `n_frames` video frames at `fps` (see module docstring).

    Args:
        model: a loaded SyncModel for `ave` (else `checkpoint` is loaded).
        batch: windows encoded at once; memory stays flat for long audio.
    """
    parts = backend_parts(backend)
    samples = check_audio(samples, sample_rate_hz)
    if len(parts) > 1:
        results = [compute_features(part, samples, melspec.SAMPLE_RATE_HZ, n_frames, fps, model, checkpoint, batch,
                                    device, progress) for part in parts]
        features = np.concatenate([result.features for result in results], axis=1)
        info = {"backend": backend, "shape": [features.shape[1]], "parts": [result.info for result in results]}
        for result in results:   # the ave part's sync model, where Avatar looks for it
            info.update({key: result.info[key] for key in ("checkpoint", "checkpoint_sha256") if key in result.info})
        return AudioFeatures(features, info)
    if backend in TRANSFORMERS_MODELS:
        features = transformers_features(backend, samples, n_frames, fps, device)
        return AudioFeatures(features, {"backend": backend, "model": TRANSFORMERS_MODELS[backend],
                                        "rate_hz": TRANSFORMERS_RATE_HZ, "shape": list(features.shape[1:])})
    if backend == "phones":
        from synctalk.audio import phones

        features = phones.phone_features(samples, n_frames, fps)
        return AudioFeatures(features, {"backend": "phones", "shape": [features.shape[1]],
                                        "visemes": list(phones.VISEMES), "block_s": phones.BLOCK_S,
                                        "context_s": phones.CONTEXT_S, "smooth_s": phones.SMOOTH_S})
    mel = melspec.melspectrogram(samples)
    if backend == "mel":
        features = melspec.frame_windows(mel, n_frames, fps)
        return AudioFeatures(features, {"backend": "mel", "shape": list(features.shape[1:]),
                                        "window_frames": melspec.WINDOW, "mel_fps": melspec.MEL_FPS})
    if model is None:
        if checkpoint is None:
            raise UserInputError("the ave backend needs a sync model checkpoint (audio.sync_checkpoint)")
        from synctalk.audio.sync_model import load_sync_model

        model = load_sync_model(checkpoint, device)
    features = encode_audio(model, mel, n_frames, fps, batch, progress=progress)
    info = {"backend": "ave", "shape": [features.shape[1]], "window_frames": melspec.WINDOW}
    if checkpoint is not None:
        from synctalk.assets import sha256_of

        info.update(checkpoint=str(Path(checkpoint).resolve()), checkpoint_sha256=sha256_of(Path(checkpoint)))
    return AudioFeatures(features, info)


@torch.no_grad()
def encode_audio(model, mel: np.ndarray, n_frames: int, fps: float, batch: int = 256,
                 progress: bool = False) -> np.ndarray:
    """The sync model's audio tower on every frame's mel window → `[N, 512]` float32 (before normalisation); runs
    on the model's device."""
    from synctalk.progress import track

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    starts = melspec.window_starts(np.arange(n_frames), fps)
    out = np.empty((n_frames, model.audio.blocks[-1].conv.out_channels), np.float32)
    for first in track(range(0, n_frames, batch), "ave features", unit="batch", leave=False, enabled=progress):
        windows = torch.from_numpy(melspec.windows_at(mel, starts[first:first + batch])).to(device)
        out[first:first + len(windows)] = model.audio(windows).float().cpu().numpy()
    model.train(was_training)
    return out


def transformers_model_dir(backend: str) -> Path:
    """Folder of a transformers model in the asset cache, or an AssetError saying what to put there."""
    from synctalk.assets import cache_dir

    repo = TRANSFORMERS_MODELS[backend]
    folder = cache_dir() / repo.split("/")[1]
    has_weights = any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))
    if not (folder / "config.json").is_file() or not has_weights:
        raise AssetError(f"audio backend '{backend}' needs the model {repo}: put its config.json and "
                         f"model.safetensors (or pytorch_model.bin) from https://huggingface.co/{repo} into "
                         f"{folder}/ (e.g. `huggingface-cli download {repo} config.json model.safetensors "
                         f"--local-dir {folder}`), or choose audio.backend=ave or mel")
    return folder


def transformers_features(backend: str, samples: np.ndarray, n_frames: int, fps: float,
                          device: str | torch.device = "cpu", model_dir: Path | None = None) -> np.ndarray:
    """Last hidden state of a HuBERT/wav2vec2 model, sampled at the frame centres → `[N, D]` float32."""
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise AssetError(f"audio backend '{backend}' needs the transformers package: pip install "
                         "'synctalk[hubert]' (or pick audio.backend=ave or mel)") from exc
    folder = model_dir or transformers_model_dir(backend)
    model = AutoModel.from_pretrained(str(folder)).to(device).eval()
    hidden = hidden_states(model, samples, device)                           # [T, D] at 50 Hz
    times = (np.arange(n_frames) + 0.5) / fps * TRANSFORMERS_RATE_HZ - 0.5   # state k covers [k, k+1) * 20 ms
    grid = np.arange(len(hidden))
    return np.stack([np.interp(times, grid, hidden[:, d]) for d in range(hidden.shape[1])], 1).astype(np.float32)


@torch.no_grad()
def hidden_states(model, samples: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """`[T, D]` last hidden states at 50 Hz for 16 kHz `samples`, computed in chunks with context so long
    audio needs bounded memory. Input is normalised to zero mean and unit variance (the models' convention)."""
    rate = melspec.SAMPLE_RATE_HZ
    x = (samples - samples.mean()) / (samples.std() + 1e-7)
    hop = int(rate / TRANSFORMERS_RATE_HZ)   # 320 samples per state
    n_states = max(1, len(x) // hop)
    chunk = int(TRANSFORMERS_CHUNK_S * TRANSFORMERS_RATE_HZ)
    context = int(TRANSFORMERS_CONTEXT_S * TRANSFORMERS_RATE_HZ)
    out = []
    for first in range(0, n_states, chunk):
        lo = max(0, first - context)
        hi = min(n_states, first + chunk + context)
        # the conv front end (receptive field 400, stride 320) gives m states for m·320 + 80 samples
        piece = torch.from_numpy(np.ascontiguousarray(x[lo * hop:hi * hop + 80], np.float32))
        states = model(piece[None].to(device)).last_hidden_state[0].float().cpu().numpy()
        take = states[first - lo:first - lo + min(chunk, n_states - first)]
        if len(take) < min(chunk, n_states - first):  # the conv stack can emit one state fewer at the very end
            take = np.concatenate([take, np.repeat(take[-1:], min(chunk, n_states - first) - len(take), 0)])
        out.append(take)
    return np.concatenate(out)
