"""Speaker-independent phonetic audio features (``audio.backend=phones``): the mouth shapes speech asks for, from any
voice, without a model trained on the subject.

pocketsphinx's allphone decoder (the CMU en-US acoustic model and phone language model that ship inside its wheel,
trained on many speakers) turns 16 kHz speech into phone segments on a 10 ms grid. Each phone maps to one of the
15 visemes of :data:`VISEMES` (mouth shapes: ``sil`` for silence and noise; 10 ms steps under ``SILENCE_DB`` are
``sil`` whatever the decoder says). Per video frame ``i`` the features are
the visemes' soft activation around the frame's centre time ``(i + 0.5) / fps`` (a Gaussian window of
``SMOOTH_S`` over the 10 ms viseme track, the convention of the mel front end), the loudness and the voicing::

    features [N, 17] = [15 viseme activations (sum 1), loudness in [0, 1], voicing in [0, 1]]

Decoding runs in blocks of ``BLOCK_S`` with ``CONTEXT_S`` of audio on each side (the block's own 10 ms labels are
kept), so :class:`PhoneTracker` fed the audio piece by piece produces exactly the offline features: a frame is
final once the audio reaches ``BLOCK_S + CONTEXT_S`` past the start of the block holding its window.

    segments = decode_phones(samples)               # [(phone, start_s, end_s)]
    features = phone_features(samples, n_frames=250, fps=25)
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np

from synctalk.errors import AssetError

__all__ = ["BLOCK_S", "CONTEXT_S", "FEATURE_SIZE", "PHONE_TO_VISEME", "PhoneTracker", "VISEMES", "decode_phones",
           "phone_features", "viseme_track"]

SAMPLE_RATE_HZ = 16000
LABEL_HZ = 100                  # pocketsphinx frames: 10 ms
BLOCK_S = 1.0                   # decoded block length (s)
CONTEXT_S = 0.5                 # audio decoded on each side of a block (s)
SMOOTH_S = 0.04                 # σ of the Gaussian window from the 10 ms track to a video frame (s)
LOUDNESS_FLOOR_DB, LOUDNESS_TOP_DB = -60.0, -10.0   # dBFS mapped to loudness 0 and 1
SILENCE_DB = -50.0              # 10 ms steps quieter than this are silence whatever the decoder says
VOICING_LAGS_HZ = (60.0, 400.0)  # pitch range searched by the voicing autocorrelation

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
_GROUPS = {
    "PP": "P B M", "FF": "F V", "TH": "TH DH", "DD": "T D", "kk": "K G NG", "CH": "CH JH SH ZH", "SS": "S Z",
    "nn": "N L", "RR": "R ER", "aa": "AA AE AH AY AW HH", "E": "EH EY", "ih": "IH IY Y", "oh": "AO OW OY",
    "ou": "UW UH W",
}
PHONE_TO_VISEME = {phone: VISEMES.index(viseme) for viseme, phones in _GROUPS.items() for phone in phones.split()}
"""The 39 CMU phones → viseme index; anything else (SIL, +NSN+, +SPN+ ...) is ``sil`` (0)."""
FEATURE_SIZE = len(VISEMES) + 2


@lru_cache(maxsize=1)
def _model_paths() -> tuple[str, str]:
    try:
        import pocketsphinx
    except ImportError:
        raise AssetError("audio.backend=phones needs the pocketsphinx package (it carries the en-US acoustic model "
                         "and phone language model): pip install pocketsphinx==5.0.4") from None
    root = pocketsphinx.get_model_path()
    hmm, phone_lm = os.path.join(root, "en-us", "en-us"), os.path.join(root, "en-us", "en-us-phone.lm.bin")
    for path in (hmm, phone_lm):
        if not os.path.exists(path):
            raise AssetError(f"pocketsphinx's model is incomplete: {path} is missing; reinstall it with "
                             "pip install --force-reinstall pocketsphinx==5.0.4")
    return hmm, phone_lm


def _decoder():
    hmm, phone_lm = _model_paths()
    from pocketsphinx import Decoder

    return Decoder(hmm=hmm, allphone=phone_lm, lw=2.0, beam=1e-20, pbeam=1e-20, loglevel="FATAL",
                   backtrace=False)


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def decode_phones(samples: np.ndarray, decoder=None) -> list[tuple[str, float, float]]:
    """Phone segments ``(phone, start_s, end_s)`` of 16 kHz mono float samples, in one utterance."""
    decoder = decoder or _decoder()
    decoder.start_utt()
    decoder.process_raw(_pcm(samples), full_utt=True)
    decoder.end_utt()
    return [(seg.word, seg.start_frame / LABEL_HZ, (seg.end_frame + 1) / LABEL_HZ) for seg in decoder.seg()]


def _block_labels(samples: np.ndarray, block: int, decoder) -> np.ndarray:
    """Viseme indices on the 10 ms grid of block ``block`` (its BLOCK_S of audio, decoded with CONTEXT_S around)."""
    per_block, context = int(BLOCK_S * LABEL_HZ), int(CONTEXT_S * LABEL_HZ)
    hop = SAMPLE_RATE_HZ // LABEL_HZ
    first = max(0, block * per_block - context)
    piece = samples[first * hop:(block * per_block + per_block + context) * hop]
    labels = np.zeros(per_block, np.int64)
    if len(piece) < hop:
        return labels
    for phone, start_s, end_s in decode_phones(piece, decoder):
        lo = int(round(start_s * LABEL_HZ)) + first - block * per_block
        hi = int(round(end_s * LABEL_HZ)) + first - block * per_block
        labels[max(lo, 0):max(min(hi, per_block), 0)] = PHONE_TO_VISEME.get(phone, 0)
    own = samples[block * per_block * hop:(block + 1) * per_block * hop].astype(np.float64)
    steps = np.zeros(per_block)
    steps[:len(own) // hop] = np.sqrt((own[:len(own) // hop * hop].reshape(-1, hop) ** 2).mean(1))
    labels[20 * np.log10(steps + 1e-10) < SILENCE_DB] = 0     # the decoder hears phones in digital silence
    return labels


def viseme_track(samples: np.ndarray, decoder=None) -> np.ndarray:
    """[T] viseme index per 10 ms of the audio (T = ceil(duration * 100)), decoded block by block."""
    decoder = decoder or _decoder()
    n_labels = math.ceil(len(samples) * LABEL_HZ / SAMPLE_RATE_HZ)
    n_blocks = math.ceil(n_labels / (BLOCK_S * LABEL_HZ))
    track = np.concatenate([_block_labels(samples, b, decoder) for b in range(n_blocks)] or [np.zeros(0, np.int64)])
    return track[:n_labels]


def _frame_visemes(track: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """[F, V] soft viseme activations at the centres of ``frames``: a Gaussian (σ SMOOTH_S) over the one-hot 10 ms
    track; label centres at (k + 0.5) / 100 s; past the audio's end counts as silence."""
    centres = (np.asarray(frames) + 0.5) / fps
    reach = int(math.ceil(3 * SMOOTH_S * LABEL_HZ))
    out = np.zeros((len(centres), len(VISEMES)), np.float32)
    for i, t in enumerate(centres):
        k0 = int(math.floor(t * LABEL_HZ - 0.5))
        ks = np.arange(k0 - reach, k0 + reach + 2)
        weights = np.exp(-0.5 * (((ks + 0.5) / LABEL_HZ - t) / SMOOTH_S) ** 2)
        labels = np.where((ks >= 0) & (ks < len(track)), track[np.clip(ks, 0, max(len(track) - 1, 0))], 0) \
            if len(track) else np.zeros(len(ks), np.int64)
        np.add.at(out[i], labels, weights)
        out[i] /= weights.sum()
    return out


def _loudness_voicing(samples: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """[F, 2] of ``frames``: loudness (RMS dBFS of the frame's 1/fps window around its centre, mapped to [0, 1])
    and voicing (the peak normalised autocorrelation at pitch lags, in [0, 1]; 0 where the loudness is 0)."""
    out = np.zeros((len(frames), 2), np.float32)
    half = int(round(SAMPLE_RATE_HZ / fps / 2))
    lag_lo, lag_hi = int(SAMPLE_RATE_HZ / VOICING_LAGS_HZ[1]), int(SAMPLE_RATE_HZ / VOICING_LAGS_HZ[0])
    for i, frame in enumerate(frames):
        centre = int(round((frame + 0.5) / fps * SAMPLE_RATE_HZ))
        window = samples[max(0, centre - max(half, lag_hi)):centre + max(half, lag_hi)]
        core = samples[max(0, centre - half):centre + half]
        if len(core) == 0:
            continue
        db = 20 * math.log10(math.sqrt(float(np.mean(core.astype(np.float64) ** 2))) + 1e-10)
        out[i, 0] = min(max((db - LOUDNESS_FLOOR_DB) / (LOUDNESS_TOP_DB - LOUDNESS_FLOOR_DB), 0.0), 1.0)
        x = window.astype(np.float64) - window.mean()
        if len(x) > 2 * lag_hi and out[i, 0] > 0:
            corr = max(np.dot(x[:-lag], x[lag:]) / (np.linalg.norm(x[:-lag]) * np.linalg.norm(x[lag:]) + 1e-12)
                       for lag in range(lag_lo, lag_hi + 1))
            out[i, 1] = min(max(corr, 0.0), 1.0)
    return out


def phone_features(samples: np.ndarray, n_frames: int, fps: float, decoder=None) -> np.ndarray:
    """[N, FEATURE_SIZE] float32 features of 16 kHz mono samples for ``n_frames`` video frames (module docstring)."""
    samples = np.asarray(samples, np.float32)
    track, frames = viseme_track(samples, decoder), np.arange(n_frames)
    return np.concatenate([_frame_visemes(track, frames, fps), _loudness_voicing(samples, frames, fps)], 1)


class PhoneTracker:
    """Incremental :func:`phone_features`: ``feed(samples)`` audio as it arrives, ``ready()`` frames are final and
    equal the offline features of the whole audio; ``finish()`` at the end of the stream.

        tracker = PhoneTracker(fps=25)
        for chunk in stream: tracker.feed(chunk); use(tracker.features(0, tracker.ready()))
    """

    def __init__(self, fps: float):
        self.fps = fps
        self.samples = np.zeros(0, np.float32)
        self.track = np.zeros(0, np.int64)
        self.finished = False
        self._decoder = _decoder()

    def feed(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, np.asarray(samples, np.float32)])
        self._decode()

    def finish(self) -> None:
        self.finished = True
        self._decode()

    def _decode(self) -> None:
        per_block = int(BLOCK_S * LABEL_HZ)
        heard = len(self.samples) * LABEL_HZ / SAMPLE_RATE_HZ                  # 10 ms labels heard
        while True:
            block = len(self.track) // per_block
            if not self.finished and heard < (block + 1) * per_block + CONTEXT_S * LABEL_HZ:
                return
            if self.finished and len(self.track) >= math.ceil(heard):
                self.track = self.track[:math.ceil(heard)]
                return
            self.track = np.concatenate([self.track, _block_labels(self.samples, block, self._decoder)])

    def ready(self) -> int:
        """Frames whose features are final: the whole smoothing window inside the decoded track and the audio."""
        if self.finished:
            return int(math.floor(len(self.samples) / SAMPLE_RATE_HZ * self.fps + 1e-9))
        reach_s = 3 * SMOOTH_S + 1 / LABEL_HZ
        decoded_s = min(len(self.track) / LABEL_HZ, len(self.samples) / SAMPLE_RATE_HZ)
        return max(0, int(math.floor((decoded_s - reach_s) * self.fps - 0.5)))

    def features(self, first: int, stop: int) -> np.ndarray:
        """[stop - first, FEATURE_SIZE] features of frames [first, stop); final when ``stop <= ready()``."""
        frames = np.arange(first, stop)
        return np.concatenate([_frame_visemes(self.track, frames, self.fps),
                               _loudness_voicing(self.samples, frames, self.fps)], 1)
