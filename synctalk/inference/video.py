"""`synctalk render`: new speech → H.264 mp4 with the audio muxed in.

Frame ``i`` shows the mouth for the audio around ``(i + 0.5) / fps`` and the video has ``round(duration * fps)``
frames, so the first frame starts with the audio at t = 0 and video and audio end within one frame of each other
(no drift: every frame's time is computed, never accumulated). Frames are rendered and encoded in chunks of
``chunk`` frames, so memory does not grow with the audio's length.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synctalk.errors import MediaError, UserInputError
from synctalk.models.mouth import DEFAULT_GAIN

log = logging.getLogger("synctalk.render")

SILENCE_PEAK = 1e-3   # peak amplitude (full scale 1) under which audio counts as silent


@dataclass
class RenderOptions:
    pose: str = "train"               # train | still | smooth (synctalk.inference.drive)
    blink: str = "source"             # source | auto | none
    still_frame: int | None = None
    portrait: bool = False            # paste back into the original footage
    plain_video: Path | None = None   # with portrait: also write the renders before paste-back here (same pass)
    restorer: bool = True             # use the portrait stage's restorer when it exists (with portrait)
    mouth: bool = True                # redraw the mouth with the mouth stage's generator when it exists
    mouth_gain: float = DEFAULT_GAIN  # style: scales the predicted mouth blendshapes, or else the audio codes
    source: Path | None = None        # the original video (default: the one in the subject's meta.json)
    size: int | None = None           # render side (default: the subject's)
    frames_dir: Path | None = None    # also write PNGs here
    allow_silent: bool = False
    chunk: int = 32                   # frames rendered per chunk
    seed: int = 0


@dataclass
class RenderReport:
    video: Path
    n_frames: int
    fps: float
    audio_seconds: float
    render_seconds: float
    frame_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def render_fps(self) -> float:
        return self.n_frames / max(self.render_seconds, 1e-9)


def load_driving_audio(path: str | Path, allow_silent: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(16 kHz mono samples for the features, mono samples at the file's own rate for the output, that rate)."""
    from synctalk.io.media import load_audio, probe

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: audio file not found")
    try:
        info = probe(path)
    except MediaError as exc:
        raise MediaError(f"{path}: not an audio or video file ffmpeg can read ({exc}); give wav, flac, mp3, m4a, "
                         "ogg or a video with sound") from exc
    if not info.has_audio:
        raise MediaError(f"{path}: has no audio stream; give a file with speech in it")
    samples = load_audio(path, 16000)
    if samples.size == 0:
        raise MediaError(f"{path}: the audio is empty")
    if np.abs(samples).max() < SILENCE_PEAK and not allow_silent:
        raise MediaError(f"{path}: the audio is silent (peak {np.abs(samples).max():.1e}); the mouth would stay "
                         "closed. Check the file, or pass --allow-silent to render it anyway")
    rate = int(info.audio_sample_rate_hz or 16000)
    return samples, (load_audio(path, rate) if rate != 16000 else samples), rate


def render_video(workspace: str | Path, audio: str | Path, out: str | Path, options: RenderOptions | None = None,
                 device: str | torch.device = "cpu", progress: bool = True) -> RenderReport:
    """Render ``audio`` spoken by the avatar in ``workspace`` into ``out`` (mp4); see the module docstring."""
    from synctalk.inference.avatar import Avatar
    from synctalk.inference.drive import make_drive
    from synctalk.io.images import write_image
    from synctalk.io.media import VideoWriter, write_wav
    from synctalk.progress import Progress

    options = options or RenderOptions()
    out = Path(out)
    check_render_outputs(out, options, audio)
    samples, native, rate = load_driving_audio(audio, options.allow_silent)
    log.info("loading the workspace %s", workspace)
    avatar = apply_mouth_options(Avatar.load(workspace, device), options)
    n = avatar.n_frames(len(samples))
    log.info("audio features (%s) of %.1f s of audio for %d frames", avatar.feature_info.get("backend", "?"),
             len(samples) / 16000, n)
    features = avatar.audio_features(samples, n)
    drive = make_drive(n, avatar.subject.poses.cpu().numpy(), avatar.subject.expressions.cpu().numpy(),
                       avatar.head.expression_names, avatar.subject.train, avatar.fps, options.pose,
                       options.blink, options.still_frame, seed=options.seed,
                       torso_tracks=avatar.subject.torso_tracks.cpu().numpy())
    portrait = PortraitCompositor(avatar, options) if options.portrait else None
    if options.frames_dir is not None:
        Path(options.frames_dir).mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = RenderReport(out, n, avatar.fps, len(samples) / 16000, 0.0, (0, 0))
    with tempfile.TemporaryDirectory() as tmp:
        track = Path(tmp) / "audio.wav"
        write_wav(track, native, rate)
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(VideoWriter(out, avatar.fps, audio_path=track))
            plain = None if options.plain_video is None else stack.enter_context(
                VideoWriter(Path(options.plain_video), avatar.fps, audio_path=track))
            bar = stack.enter_context(Progress("render", total=n, unit="frame", enabled=progress))
            for start in range(0, n, options.chunk):
                t0 = time.perf_counter()
                frames = list(range(start, min(start + options.chunk, n)))
                raw: list[np.ndarray] = []
                images = render_frames(avatar, features, drive, frames, options.size, portrait, raw, bar.update)
                report.render_seconds += time.perf_counter() - t0
                if plain is not None:
                    for image in raw:
                        plain.write(image)
                for k, image in zip(frames, images, strict=True):
                    writer.write(image)
                    if options.frames_dir is not None:
                        write_image(Path(options.frames_dir) / f"{k:06d}.png", image)
                report.frame_size = images[0].shape[1], images[0].shape[0]
    log.info("rendered %d frames at %.2f frames/s", n, report.render_fps)
    return report


def check_options(options: RenderOptions) -> None:
    """Refuse numbers that cannot work, before anything is loaded (the CLI refuses them when parsing, too)."""
    if not options.mouth_gain > 0:
        raise UserInputError(f"--mouth-gain must be positive, got {options.mouth_gain}")
    if options.size is not None and options.size < 1:
        raise UserInputError(f"--size must be a whole number of pixels >= 1 (or left out for the subject's size), "
                             f"got {options.size}")
    if options.still_frame is not None and options.still_frame < 0:
        raise UserInputError(f"--still-frame must be a frame index >= 0, got {options.still_frame}")
    if options.chunk < 1:
        raise UserInputError(f"the render chunk must be >= 1 frame, got {options.chunk}")


def _frames_only(folder: Path) -> bool:
    """A --frames-dir that holds only frame PNGs (a previous render's): it may be written again."""
    return all(re.fullmatch(r"\d{6}\.png", p.name) for p in folder.iterdir())


def check_render_outputs(out: Path, options: RenderOptions, audio: str | Path) -> None:
    """Everything the render will write, checked before the work (see synctalk.io.outputs)."""
    from synctalk.io.outputs import check_output_dir, check_output_file

    check_options(options)
    if options.plain_video is not None and not options.portrait:
        raise UserInputError("plain_video is the render before paste-back; it needs portrait=True")
    if options.source is not None and not options.portrait:
        raise UserInputError(f"--source {options.source} is the original video for the --portrait paste-back; add "
                             "--portrait, or leave --source out")
    if options.source is not None and not Path(options.source).is_file():
        raise UserInputError(f"--source {options.source}: no such video file; give the original video the subject "
                             "was made from")
    check_output_file(out, "output video", suffixes=(".mp4",), inputs=[audio, options.source])
    if options.plain_video is not None:
        check_output_file(options.plain_video, "plain video", suffixes=(".mp4",), inputs=[audio, options.source, out])
    if options.frames_dir is not None:
        check_output_dir(options.frames_dir, "frames folder", "--frames-dir", ours=_frames_only)


def apply_mouth_options(avatar, options: RenderOptions):
    """The avatar without its mouth stage (``options.mouth`` False) or with ``options.mouth_gain`` (checked by
    :func:`check_options` before the workspace was loaded)."""
    if not options.mouth:
        avatar.mouth = None
    avatar.mouth_gain = options.mouth_gain
    return avatar


def render_frames(avatar, features: np.ndarray, drive, frames: list[int], size: int | None = None,
                  portrait: PortraitCompositor | None = None, raw: list | None = None,
                  frame_done: Callable[[], object] | None = None) -> list[np.ndarray]:
    """uint8 images of output frames ``frames`` (indices into ``features`` and ``drive``); the renders before any
    ``portrait`` paste-back are appended to the list ``raw`` when given; ``frame_done()`` is called after each
    frame (progress)."""
    from synctalk.models.frame import FrameInputs
    from synctalk.models.torso import pose_vector

    codes = avatar.audio_codes(features, frames)
    shapes = avatar.mouth_shapes(features, frames)
    c2w = torch.as_tensor(drive.c2w[frames], dtype=torch.float32, device=avatar.device)
    torso_poses = pose_vector(c2w)
    expressions = torch.as_tensor(drive.expressions[frames], dtype=torch.float32, device=avatar.device)
    pose_frames = drive.pose_frames[frames]
    tracks = torch.as_tensor(avatar.subject.torso_tracks.cpu().numpy()[pose_frames] if drive.torso_tracks is None
                             else drive.torso_tracks[frames], dtype=torch.float32, device=avatar.device)
    images = []
    for j, pose_frame in enumerate(int(f) for f in pose_frames):
        inputs = FrameInputs(c2w=c2w[j], audio_code=codes[j], expression=expressions[j], torso_pose=torso_poses[j],
                             torso_track=tracks[j], appearance_frame=pose_frame)
        rgb = avatar.render(inputs, pose_frame, size, None if shapes is None else shapes[j]).rgb
        image = (rgb.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        images.append(portrait(image, pose_frame) if portrait is not None else image)
        if raw is not None:
            raw.append(image)
        if frame_done is not None:
            frame_done()
    return images


class PortraitCompositor:
    """Paste-back (plus the restorer when the workspace has one) of renders into the pose frames' footage."""

    def __init__(self, avatar, options: RenderOptions):
        from synctalk.data.source import SourceFrames
        from synctalk.models.portrait import Crop

        self.avatar = avatar
        self.crop = Crop.from_meta(avatar.ds.meta, avatar.ds.root)
        self.source = SourceFrames(avatar.ds, avatar.workspace / "portrait" / "source", options.source)
        self.source.ensure()
        self.restorer = load_restorer(avatar.workspace, avatar.device) if options.restorer else None

    def __call__(self, image: np.ndarray, pose_frame: int) -> np.ndarray:
        return composite_portrait(image, self.source[pose_frame], self.avatar.ds.landmarks[pose_frame],
                                  self.avatar.ds.width, self.crop, self.restorer)


def composite_portrait(render: np.ndarray, original: np.ndarray, landmarks: np.ndarray, size: int, crop,
                       restorer=None) -> np.ndarray:
    """Paste ``render`` (uint8, any side) into ``original`` through the face mask of ``landmarks`` (subject
    pixels of a ``size`` frame); with a restorer, repair the seam band and the chin inside the crop."""
    from synctalk.models.portrait import face_mask, paste_back, repair_region

    mask = face_mask(landmarks, size, crop.side)
    pasted = paste_back(render, original, crop, mask)
    if restorer is None:
        return pasted
    import cv2

    inside = (slice(crop.y0, crop.y0 + crop.side), slice(crop.x0, crop.x0 + crop.side))
    if crop.x0 < 0 or crop.y0 < 0 or crop.y0 + crop.side > original.shape[0] or \
            crop.x0 + crop.side > original.shape[1]:
        return pasted  # the restorer works on whole crops; crops that leave the frame keep plain paste-back
    up = cv2.resize(render, (crop.side, crop.side), interpolation=cv2.INTER_CUBIC)
    region = repair_region(mask, landmarks, size)
    pasted[inside] = restorer.restore(pasted[inside], up, mask, region)
    return pasted


def load_restorer(workspace: Path, device):
    """The portrait stage's restorer (EMA weights), or None when the workspace has none."""
    from synctalk.models.portrait import Restorer
    from synctalk.train.checkpoint import CheckpointManager

    ckpt = CheckpointManager(Path(workspace) / "checkpoints" / "portrait").load_latest(map_location=device)
    if ckpt is None:
        return None
    restorer = Restorer(**ckpt.get("restorer_config", {})).to(device)
    restorer.load_state_dict(ckpt.get("ema") or ckpt["model"])
    return restorer.eval()
