"""A trained workspace, loaded for rendering new speech.

    avatar = Avatar.load("ws/macron")                       # models (EMA weights), subject data, audio backend
    features = avatar.audio_features(samples_16k)           # [N, ...] for N = round(duration * fps) frames
    codes = avatar.audio_codes(features, range(0, 64))      # [64, A]
    shapes = avatar.mouth_shapes(features, range(0, 64))   # [64, 27] or None (no mouth stage)
    frame = avatar.render(FrameInputs(...), pose_frame, mouth_shapes=shapes[0])  # FrameOutput, subject's size
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synctalk.errors import SyncTalkError, UserInputError
from synctalk.models.mouth import DEFAULT_GAIN

log = logging.getLogger("synctalk.render")

SAMPLE_RATE_HZ = 16000


def unfinished_stages(state: dict, cfg, workspace: Path) -> list[str]:
    """The training stages of a workspace's ``train_log.json`` state that its config asks for (steps > 0) and that
    are neither done nor skipped, each as ``"lips: stopped at step 2 of 4"``; empty when training is finished."""
    from synctalk.train.checkpoint import STAGES, CheckpointManager

    out = []
    for stage in STAGES:
        steps = getattr(cfg.train, "mouth_generator_steps" if stage == "mouth" else f"{stage}_steps")
        info = state.get("stages", {}).get(stage, {})
        status = info.get("status", "pending")
        if steps <= 0 or status in ("done", "skipped"):
            continue
        saved = CheckpointManager(Path(workspace) / "checkpoints" / stage).steps()
        step = info.get("step", saved[-1] if saved else None)
        if status == "interrupted":
            out.append(f"{stage} stopped at step {step} of {steps}")
        elif status == "running":
            out.append(f"{stage} running or killed" + (f", last checkpoint at step {step} of {steps}"
                                                         if step is not None else ", no checkpoint yet"))
        else:
            out.append(f"{stage} not started")
    return out


def finish_command(subject: Path, workspace: Path) -> str:
    """The command that resumes a workspace's training with the config it was started with."""
    import shlex

    return (f"synctalk train {shlex.quote(str(subject))} -w {shlex.quote(str(workspace))} --config "
            f"{shlex.quote(str(Path(workspace) / 'config.yaml'))}")


@dataclass
class Avatar:
    workspace: Path
    cfg: object                  # SyncTalkConfig the workspace was trained with
    ds: object                   # SubjectDataset
    head: torch.nn.Module
    torso: torch.nn.Module | None
    subject: object              # synctalk.models.subject.SubjectTensors
    feature_info: dict
    device: torch.device
    mouth: object | None = None  # synctalk.models.mouth.MouthModel when the mouth stage has run
    mouth_gain: float = DEFAULT_GAIN  # scales the predicted blendshapes, or without a mouth stage the audio codes
    _mean_code: torch.Tensor | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, workspace: str | Path, device: str | torch.device = "cpu") -> Avatar:
        from synctalk.audio.workspace import workspace_features
        from synctalk.config import SyncTalkConfig, load_config
        from synctalk.data import SubjectDataset
        from synctalk.data.contract import TRAIN_STEPS
        from synctalk.models.mouth import load_mouth_model
        from synctalk.models.registry import build_models, subject_spec
        from synctalk.models.subject import load_subject
        from synctalk.train.checkpoint import CheckpointManager

        workspace = Path(workspace)
        log_path = workspace / "train_log.json"
        if not log_path.is_file():
            raise UserInputError(f"{workspace}: not a trained workspace (no train_log.json). Train one first: "
                                 f"synctalk train SUBJECT -w {workspace}")
        state = json.loads(log_path.read_text())
        cfg = load_config(SyncTalkConfig, workspace / "config.yaml")
        subject_dir = Path(state["subject"])
        if not subject_dir.is_dir():
            raise UserInputError(f"{workspace}: its subject directory {subject_dir} is gone; put it back (the "
                                 f"render needs its poses, plates and audio model)")
        ds = SubjectDataset(subject_dir, require=TRAIN_STEPS, cache_frames=cfg.data.frame_cache)
        device = torch.device(device)
        spec = subject_spec(cfg, tuple(state["feature_shape"]), state["n_frames"], box=state.get("head_box"))
        head, torso = build_models(cfg, spec, device)
        weights = {}
        for stage in ("head", "lips", "torso"):
            ckpt = CheckpointManager(workspace / "checkpoints" / stage).load_latest(map_location=device)
            if ckpt is not None:
                weights[stage] = ckpt.get("ema") or ckpt["model"]
        head_weights = weights.get("lips") or weights.get("head")
        if head_weights is None:
            raise UserInputError(f"{workspace}: has no head checkpoint yet; train the head (and the rest) with: "
                                 f"{finish_command(subject_dir, workspace)}")
        head.load_state_dict(head_weights)
        if "torso" in weights:
            torso.load_state_dict(weights["torso"])
        else:
            log.info("%s: no torso stage; the head is drawn over each pose frame's torso plate", workspace)
            torso = None
        unfinished = unfinished_stages(state, cfg, workspace)
        if unfinished:
            log.warning("%s: training is not finished (%s); rendering with what it has. Finish it with: %s",
                        workspace, "; ".join(unfinished), finish_command(subject_dir, workspace))
        for module in (head, torso):
            if module is not None:
                module.eval()
        features, info = workspace_features(ds, cfg, workspace, device)
        subject = load_subject(ds, device, head.expression_names, cfg.train.poses, features)
        mouth = load_mouth_model(workspace, device)
        return cls(workspace, cfg, ds, head, torso, subject, info, device, mouth)

    # ---------------------------------------------------------------------------------------------- audio
    @property
    def fps(self) -> float:
        return float(self.ds.fps)

    def n_frames(self, n_samples: int) -> int:
        """Video frames for ``n_samples`` of 16 kHz audio: the duration rounded to whole frames."""
        return max(1, int(round(n_samples / SAMPLE_RATE_HZ * self.fps)))

    def sync_checkpoint(self) -> Path | None:
        from synctalk.audio.features import backend_parts

        if "ave" not in backend_parts(self.feature_info.get("backend", "ave")):
            return None
        for candidate in (self.feature_info.get("checkpoint"), self.ds.root / "sync.pt"):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        raise SyncTalkError(f"the model was trained on ave features, whose sync model "
                            f"{self.feature_info.get('checkpoint')} is gone (and {self.ds.root / 'sync.pt'} too); "
                            "put it back to compute features of new audio")

    def audio_features(self, samples: np.ndarray, n_frames: int | None = None, backend: str | None = None
                       ) -> np.ndarray:
        """Features of 16 kHz mono ``samples`` with the backend the model was trained on (or ``backend``, one of its
        parts) → ``[N, ...]``."""
        from synctalk.audio.features import compute_features

        n_frames = n_frames or self.n_frames(len(samples))
        return compute_features(backend or self.feature_info["backend"], samples, SAMPLE_RATE_HZ, n_frames, self.fps,
                                checkpoint=self.sync_checkpoint(), device=self.device).features

    @torch.no_grad()
    def audio_codes(self, features: np.ndarray | torch.Tensor, frames, gain: float | None = None) -> torch.Tensor:
        """Audio codes ``[len(frames), A]`` of frames of a feature array (each frame sees its centred window).

        Without a mouth stage the head's mouth follows the codes, so ``gain`` (default ``mouth_gain``) stretches
        them around the mean code of the training frames (1: as trained)."""
        features = features if torch.is_tensor(features) else np.asarray(features)  # a tensor may be on any device
        features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        codes = self.head.encode_audio(features, torch.as_tensor(list(frames), device=self.device))
        gain = self.mouth_gain if gain is None else gain
        if self.mouth is not None or gain == 1.0:
            return codes
        if self._mean_code is None:
            train = list(self.subject.train)
            self._mean_code = self.audio_codes(self.subject.features, train, gain=1.0).mean(0)
        return self._mean_code + float(gain) * (codes - self._mean_code)

    def mouth_shapes(self, features: np.ndarray | torch.Tensor, frames) -> np.ndarray | None:
        """The mouth blendshapes ``[len(frames), 27]`` the audio predicts (standardised units, times
        ``mouth_gain``), or None without a mouth stage."""
        if self.mouth is None:
            return None
        features = features.cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
        return self.mouth.predictor.predict(features, list(frames)) * np.float32(self.mouth_gain)

    @torch.no_grad()
    def predicted_mouth(self, features: np.ndarray | torch.Tensor, frames) -> np.ndarray | None:
        """The mouth blendshapes ``[len(frames), 27]`` (standardised units, gain 1) that drive the mouth: the mouth
        stage's predictor, else the head's own linear mouth head on its audio codes; None without either."""
        if self.mouth is not None:
            features = features.cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
            return self.mouth.predictor.predict(features, list(frames))
        if getattr(self.head, "mouth_head", None) is None:
            return None
        return self.head.predict_mouth(self.audio_codes(features, frames, gain=1.0)).float().cpu().numpy()

    # ---------------------------------------------------------------------------------------------- frames
    def behind(self, pose_frame: int) -> torch.Tensor:
        """What shows behind the head: the background plate with a torso model, else the pose frame's torso
        plate; float ``[H*W, 3]``."""
        from synctalk.io.images import read_image

        image = read_image(self.ds.root / "background.png") if self.torso is not None else self.ds.torso(pose_frame)
        return torch.as_tensor(np.array(image), device=self.device).reshape(-1, 3).float() / 255

    @torch.no_grad()
    def render(self, inputs, pose_frame: int, size: int | None = None, mouth_shapes: np.ndarray | None = None):
        """One frame (:class:`synctalk.models.frame.FrameOutput`) at ``size`` (default: the subject's); with
        ``mouth_shapes`` ``[27]`` (from :meth:`mouth_shapes`) and a mouth stage, lips and chin are redrawn."""
        from synctalk.models.frame import render_frame, scaled_intrinsics

        size = size or self.ds.width
        behind = self.behind(pose_frame)
        if size != self.ds.width:
            plate = behind.reshape(self.ds.height, self.ds.width, 3).permute(2, 0, 1)[None]
            behind = torch.nn.functional.interpolate(plate, size=(size, size), mode="area")[0].permute(1, 2, 0)
        out = render_frame(self.head, self.torso, inputs, scaled_intrinsics(self.subject.K, size / self.ds.width),
                           size, size, behind)
        if self.mouth is not None and mouth_shapes is not None:
            landmarks = np.asarray(self.ds.landmarks[pose_frame])[None, :, :2] * (size / self.ds.width)
            shapes = mouth_shapes if torch.is_tensor(mouth_shapes) else np.asarray(mouth_shapes)  # [27], any device
            out.rgb = self.mouth.redraw(out.rgb[None], landmarks, shapes[None])[0]
        return out
