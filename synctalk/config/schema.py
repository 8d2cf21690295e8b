"""Config schemas. Each field's `help` is its documentation and the CLI help text.

Sections are added by the issues that implement them (model, train, render...). Defaults here are the
full-quality GPU profile; `configs/*.yaml` hold named recipes that override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

RANGE_KEYS = ("at_least", "above", "at_most", "below")


def knob(default: Any, help: str, *, at_least: float | None = None, above: float | None = None,
         at_most: float | None = None, below: float | None = None, **kwargs: Any) -> Any:
    """A dataclass field with documentation. Mutable defaults go through `default_factory`. The bounds (``at_least``
    <= value, ``above`` < value, value <= ``at_most``, value < ``below``) are checked when a config is loaded
    (synctalk.config.loader), so a bad number is refused with its key instead of failing (or training nonsense)
    later."""
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    metadata = {"help": help, **{name: value for name, value in bounds.items() if value is not None}}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class PreprocessConfig:
    fps: float = knob(25.0, "Frame rate of the subject dataset (frames/s); the source video is resampled to it.",
                      above=0, at_most=240)
    size: int = knob(512, "Side of the square face crop written to the subject dataset (pixels).", at_least=64,
                     at_most=4096)
    sample_rate_hz: int = knob(16000, "Audio sample rate of the subject's audio.wav (Hz, mono).", at_least=8000)
    face: str | int = knob("auto", "Which face is the subject when the clip shows several: auto (the one whose mouth "
                                   "moves with the speech; the largest when that is unclear), largest, or a number "
                                   "(1 = the leftmost face, 2 = the next...).")
    face_fraction: float = knob(0.5, "Face-detector box height as a fraction of the crop side (0.5 frames head "
                                     "and shoulders like the usual 512x512 talking-head datasets).", above=0,
                                at_most=1)
    detect_every_s: float = knob(0.2, "Sampling interval of the face search that chooses the crop (s).", above=0)
    max_gap_frames: int = knob(6, "Frames without a face in a run this short are interpolated and flagged; "
                                  "longer runs are excluded from training.", at_least=0)
    min_face_fraction: float = knob(0.5, "Fail when fewer frames than this fraction have a face.", at_least=0,
                                    at_most=1)
    smooth_window: int = knob(5, "Zero-lag Savitzky-Golay window over landmarks and blendshapes (frames, odd; "
                                 "1 disables).", at_least=1)
    av_tolerance_s: float = knob(0.5, "Largest audio/video length difference that is padded or trimmed "
                                      "silently (s).", at_least=0)
    trim_to_shorter: bool = knob(False, "When audio and video lengths differ by more than av_tolerance_s, cut "
                                        "both to the shorter instead of failing.")
    parser: str = knob("mediapipe", "Face/body parser for the parsing masks.")
    background_samples: int = knob(60, "Frames sampled over the clip to estimate the background plate.", at_least=1)
    pose_focal_range: list[float] = knob([0.8, 3.0], "Focal-length search range, multiples of the frame width "
                                                    "(SyncTalk scans 500-1450 px at 512).")
    pose_smoothness: float = knob(2.0, "Weight of the Head-Sync Stabilizer's temporal prior (0: off).")
    pose_track_points: int = knob(80, "Optical-flow keypoints tracked on the rigid head region (0: landmarks "
                                      "only).")
    pose_iterations: int = knob(300, "L-BFGS iterations of the head-pose bundle adjustment.", at_least=1)
    val_fraction: float = knob(0.1, "Last part of the clip held out for validation (fraction of frames; 0: none, "
                                    "training then reports no validation figure).", at_least=0, below=1)
    torso_track_motion: str = knob("affine", "2D motion model of the torso track: affine, euclidean, translation "
                                   "or none (identity: the torso model follows the head pose only).")
    workers: int = knob(2, "Worker threads for per-frame steps.", at_least=1)
    qa: bool = knob(True, "Write QA contact sheets and plots to SUBJECT/qa/.")


@dataclass
class DataConfig:
    frame_cache: int = knob(64, "Decoded images kept in memory per image kind (LRU); memory does not grow "
                                "with video length.", at_least=0)
    preload_mb: float = knob(2048.0, "Training frames (uint8 images, torso plates, label maps) are kept on the "
                                     "training device when they take at most this many MB; longer clips are "
                                     "streamed by a worker thread, so memory does not grow with video length.",
                             at_least=0)
    lookahead: int = knob(4, "Batches decoded ahead when training frames are streamed.", at_least=1)


@dataclass
class DemoConfig:
    seconds: float = knob(6.0, "Length of the built-in sample clip (s).", above=0)
    size: int = knob(256, "Side of the built-in sample clip (pixels).", at_least=32)
    fps: float = knob(25.0, "Frame rate of the built-in sample clip (frames/s).", above=0)
    render_size: int = knob(0, "Side of the demo's renders of new speech (0: the subject's size).", at_least=0)


@dataclass
class AudioConfig:
    backend: Literal["ave", "mel", "hubert", "wav2vec2", "phones", "phones+ave", "phones+hubert",
                     "phones+wav2vec2"] = knob(
        "ave", "Per-frame audio features: ave (the sync model's audio tower, 512-d), mel (the raw 80x16 mel "
        "window, the ablation baseline), hubert / wav2vec2 (transformers models from the asset cache), phones "
        "(viseme activations, loudness and voicing from pocketsphinx's phone decoder: any voice, 17-d); A+B puts "
        "two 1-D backends side by side.")
    sync_checkpoint: str = knob("", "Sync model for the ave backend (from `synctalk sync-train`, or a "
                                "Wav2Lip/SyncTalk audio-encoder .pth). Empty: preprocess trains one on the "
                                "subject's own clip (SUBJECT/sync.pt, budget sync.budget_minutes).")
    feature_batch: int = knob(256, "Audio windows encoded per batch (memory stays flat for long audio).")


@dataclass
class SyncTrainConfig:
    width: float = knob(0.5, "Channel width of both towers relative to the Wav2Lip layout (1.0 = that layout).",
                        above=0)
    batch_size: int = knob(64, "Video windows per step; each is contrasted with the batch's other audio windows "
                           "and one shifted window of its own clip.", at_least=2)
    lr: float = knob(1e-3, "AdamW learning rate (cosine decay to 5% over max_steps).", above=0)
    weight_decay: float = knob(1e-4, "AdamW weight decay.", at_least=0)
    max_steps: int = knob(20000, "Training steps (the time budget may stop it earlier).", at_least=0)
    budget_minutes: float = knob(0.0, "Wall-clock budget over all resumed runs (0: none).", at_least=0)
    min_offset: int = knob(5, "Off-sync negatives are shifted by at least this many frames.", at_least=1)
    max_offset: int = knob(15, "... and at most this many.", at_least=1)
    eval_every: int = knob(250, "Steps between held-out offset checks (when a held-out part exists).", at_least=0)
    checkpoint_every_s: float = knob(60.0, "Seconds between checkpoints (also written at the end and on Ctrl-C).",
                                     at_least=0)
    subject_budget_minutes: float = knob(6.0, "Budget when preprocess trains the model on the subject's own clip.",
                                         at_least=0)


@dataclass
class TrainConfig:
    head_steps: int = knob(20000, "Head stage: random-ray steps.", at_least=0)
    lips_steps: int = knob(4000, "Lips stage: patch steps around the mouth (SSIM + gradient loss).", at_least=0)
    torso_steps: int = knob(8000, "Torso stage: steps with the head frozen.", at_least=0)
    portrait_steps: int = knob(2000, "Portrait stage: restorer steps (0: no restorer; needs the original video).",
                               at_least=0)
    portrait_frames: int = knob(48, "Training frames rendered and pasted back to train the restorer.", at_least=1)
    portrait_patch: int = knob(128, "Restorer training window side (crop pixels).", at_least=8)
    mouth_generator_steps: int = knob(4000, "Mouth stage: steps of the 2-D mouth generator that redraws lips and "
                                      "chin from the blendshapes the audio predicts (0: no mouth stage).", at_least=0)
    mouth_generator_width: int = knob(24, "Mouth generator: channels of its first level (doubling per level).",
                                      at_least=1)
    mouth_generator_size: int = knob(64, "Mouth generator: side of its crop (pixels, a multiple of 8).", at_least=8)
    rays: int = knob(4096, "Rays per step (head and torso stages).", at_least=1)
    patch: int = knob(32, "Patch side in the lips stage (pixels).", at_least=4)
    head_fraction: float = knob(0.5, "Fraction of random rays drawn inside the head (torso stage: the neck and "
                                "torso).", at_least=0, at_most=1)
    box_fraction: float = knob(0.25, "Fraction of random rays drawn in the head's bounding box grown by a quarter "
                               "per side (trains away haze around the head).", at_least=0, at_most=1)
    mouth_fraction: float = knob(0.0, "Head stage: fraction of random rays drawn around the mouth (the lip "
                                 "landmarks' box grown by half per side), where the audio has to show.",
                                 at_least=0, at_most=1)
    frames_per_batch: int = knob(1, "Frames whose rays share one head or torso step (an equal share each); more "
                                 "frames show the audio and expression inputs more conditionings per step.", at_least=1)
    lr_grid: float = knob(1e-2, "AdamW learning rate of the hash grids.", above=0)
    lr_mlp: float = knob(1e-3, "AdamW learning rate of the networks.", above=0)
    lr_final: float = knob(0.1, "Learning rates decay exponentially to this fraction by the end of a stage.", above=0)
    ema_decay: float = knob(0.99, "EMA of the weights used for evaluation and rendering (0: off).", at_least=0, below=1)
    audio_backend: Literal["subject", "ave", "mel", "hubert", "wav2vec2", "phones", "phones+ave", "phones+hubert",
                           "phones+wav2vec2"] = knob(
        "subject", "Audio features the head is conditioned on: the subject's (from preprocessing), or another "
        "backend computed from the subject's audio into the workspace (for ablations; ave uses SUBJECT/sync.pt or "
        "audio.sync_checkpoint).")
    expression: str = knob("upper7", "Expression input: upper7 (brows + blinks, 7 blendshapes), blink2 (the two "
                           "eyeBlink scores), none, or comma-separated ARKit blendshape names.")
    poses: Literal["stabilised", "raw"] = knob("stabilised", "Head poses: the Head-Sync Stabilizer's (poses.npy) "
                                               "or the raw per-frame fits (poses_raw.npy), for ablations.")
    attention_weight: float = knob(1e-4, "Weight of the facial-aware masked-attention losses (audio attention "
                                   "outside the lower face, expression attention inside it; 0: off).", at_least=0)
    mouth_weight: float = knob(0.0, "Weight of the mouth loss: a linear head on the audio code predicts the "
                               "frame's 27 jaw/mouth blendshapes (standardised), so the code carries the mouth's "
                               "state (0: off, no head).", at_least=0)
    mouth_warmup_steps: int = knob(0, "Steps fitting the audio net to the mouth blendshapes alone before the head "
                                   "stage (full batch of training frames; needs mouth_weight > 0).", at_least=0)
    audio_grad: Literal["all", "mouth"] = knob("all", "What trains the audio net: all losses, or the mouth loss "
                                               "alone (needs mouth_weight > 0), so the field cannot turn audio codes "
                                               "into per-frame identifiers that do not carry over to new audio.")
    audio_noise: float = knob(0.0, "Gaussian noise added to the audio codes the head field sees in training, as a "
                              "fraction of the codes' RMS (keeps the field smooth in the code).", at_least=0)
    uncertainty_start: float = knob(1.0, "Fraction of the head stage after which the photometric loss is "
                                    "uncertainty-weighted (plain L1 before; 1.0: never, the default until a run "
                                    "shows that a late switch helps).", at_least=0, at_most=1)
    mask_weight: float = knob(0.1, "Silhouette loss weight: head opacity vs the parsing head mask (head and lips "
                              "stages).", at_least=0)
    torso_mask_weight: float = knob(0.5, "Silhouette loss weight of the torso stage: torso alpha vs the neck + "
                                    "torso mask outside the head (without it the 2D torso also paints the "
                                    "background, half transparent and blurrier than the plate).", at_least=0)
    entropy_weight: float = knob(1e-4, "Opacity entropy weight (head stage).", at_least=0)
    lips_lpips_weight: float = knob(0.01, "Weight of LPIPS (AlexNet) on lip patches when lpips_alex.pt is in the "
                                    "model cache (`synctalk assets fetch lpips_alex`); it replaces the SSIM + "
                                    "gradient terms then (0: always those).", at_least=0)
    lips_ssim_weight: float = knob(0.2, "Weight of 1 - SSIM on lip patches (the fallback for LPIPS).", at_least=0)
    lips_gradient_weight: float = knob(0.1, "Weight of the image-gradient loss on lip patches (the fallback for "
                                       "LPIPS).", at_least=0)
    eval_every: int = knob(1000, "Steps between validation renders (PSNR, images in TensorBoard).", at_least=0)
    eval_size: int = knob(128, "Side of the validation renders during training (pixels).", at_least=8)
    eval_frames: int = knob(4, "Validation frames rendered at each evaluation.", at_least=1)
    checkpoint_every: int = knob(1000, "Steps between checkpoints (also at stage ends and on Ctrl-C).", at_least=0)
    keep_last: int = knob(3, "Checkpoints kept per stage (plus the best).", at_least=1)
    log_every: int = knob(50, "Steps between TensorBoard scalars.", at_least=1)
    tf32: bool = knob(True, "On CUDA, let matmuls and convolutions use TF32 tensor cores (about 10 bits of "
                      "mantissa; ignored on CPU).")
    budget_minutes: float = knob(0.0, "Wall-clock budget of all stages together, split by their step counts "
                                 "(0: none).", at_least=0)


@dataclass
class NerfHeadConfig:
    """`model.head: nerf`: the tri-plane hash head field (synctalk.models.head.HeadModel)."""

    levels: int = knob(12, "Tri-plane hash levels.", at_least=1)
    base: int = knob(64, "Coarsest tri-plane resolution.", at_least=2)
    finest: int = knob(512, "Finest tri-plane resolution.", at_least=2)
    features: int = knob(1, "Tri-plane features per level and plane.", at_least=1)
    table_log2: int = knob(14, "Tri-plane hash table rows per level (log2).", at_least=4, at_most=30)
    hidden: int = knob(64, "Hidden width of the density and colour networks.", at_least=1)
    grid_resolution: int = knob(128, "Occupancy grid cells per 2 world units on each axis (the [-1, 1]³ box gets "
                                     "this many per axis).", at_least=2)
    max_steps: int = knob(512, "Samples per ray at most.", at_least=1)


@dataclass
class GaussianHeadConfig:
    """`model.head: gaussian`: audio-driven 3-D Gaussians, splatted (synctalk.models.gaussian.GaussianHead)."""

    count: int = knob(60000, "Gaussians of the head (fixed: the cap; transparent ones are relocated, not "
                             "added).", at_least=1)
    mouth_count: int = knob(3000, "Gaussians inside the mouth (teeth, tongue), composited behind the face.", at_least=0)
    sh_degree: int = knob(1, "Spherical-harmonics degree of the colours (0: view-independent).", at_least=0, at_most=3)
    levels: int = knob(12, "Tri-plane hash levels of the deformation features.", at_least=1)
    base: int = knob(64, "Coarsest tri-plane resolution.", at_least=2)
    finest: int = knob(512, "Finest tri-plane resolution.", at_least=2)
    table_log2: int = knob(14, "Tri-plane hash table rows per level (log2).", at_least=4, at_most=30)
    hidden: int = knob(64, "Hidden width of the deformation network.", at_least=1)
    init_opacity: float = knob(0.1, "Opacity of the seeded Gaussians.", above=0, below=1)
    min_opacity: float = knob(0.005, "Gaussians below this opacity are relocated onto visible ones.",
                              at_least=0, below=1)
    relocate_every: int = knob(100, "Steps between relocations (0: never).", at_least=0)
    relocate_until: int = knob(12000, "Last step with relocation (later steps settle what is there).", at_least=0)
    lr_means: float = knob(1.6e-4, "Learning rate of the centres, per unit of the head box's half diagonal.",
                           at_least=0)
    lr_scales: float = knob(5e-3, "Learning rate of the log-scales.", at_least=0)
    lr_quats: float = knob(1e-3, "Learning rate of the rotations.", at_least=0)
    lr_opacity: float = knob(5e-2, "Learning rate of the opacity logits.", at_least=0)
    lr_sh: float = knob(2.5e-3, "Learning rate of the colour coefficients.", at_least=0)
    ssim_weight: float = knob(0.2, "Weight of 1 - SSIM on whole training frames (the 3DGS photometric loss).",
                              at_least=0)
    lpips_weight: float = knob(0.01, "Weight of LPIPS (AlexNet) on whole training frames, added to D-SSIM when "
                                     "lpips_alex.pt is in the model cache (0: off).", at_least=0)


@dataclass
class ModelConfig:
    head: Literal["nerf", "gaussian"] = knob("nerf", "Head representation (synctalk.models.registry.HEADS); its "
                                             "settings are the section of the same name.")
    head_box_margin: float = knob(0.1, "Growth per side of the head's box measured from the subject (fraction of "
                                  "its size): the volume a head may fill.", at_least=0)
    nerf: NerfHeadConfig = section(NerfHeadConfig, "The NeRF head (tri-plane hash field + occupancy grid).")
    gaussian: GaussianHeadConfig = section(GaussianHeadConfig, "The Gaussian head (3-D Gaussians + deformation "
                                           "network, splatted).")


@dataclass
class SyncTalkConfig:
    seed: int = knob(0, "Seed for every random number generator (python, numpy, torch).", at_least=0, below=2**32)
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "Compute device; auto picks cuda when available.")
    preprocess: PreprocessConfig = section(PreprocessConfig, "Video to subject dataset.")
    data: DataConfig = section(DataConfig, "Subject dataset loading.")
    demo: DemoConfig = section(DemoConfig, "The built-in sample used by `synctalk demo`.")
    audio: AudioConfig = section(AudioConfig, "Face-Sync Controller: per-frame audio features.")
    sync: SyncTrainConfig = section(SyncTrainConfig, "Training of the audio-visual sync model (sync-train).")
    model: ModelConfig = section(ModelConfig, "The head representation and its size.")
    train: TrainConfig = section(TrainConfig, "`synctalk train`: stages, steps, learning rates, losses.")

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "train.field_levels": "model.nerf.levels", "train.field_base": "model.nerf.base",
        "train.field_finest": "model.nerf.finest", "train.field_features": "model.nerf.features",
        "train.field_table_log2": "model.nerf.table_log2", "train.hidden": "model.nerf.hidden",
        "train.grid_resolution": "model.nerf.grid_resolution", "train.max_steps": "model.nerf.max_steps",
    }
    """Keys of older configs (and workspaces' config.yaml) → where they live now; read with a warning."""
