"""`synctalk train SUBJECT -w WORKSPACE`: head → lips → torso → mouth → portrait, each stage resumable.

Stages:
- **head**: random rays of `train.frames_per_batch` training frames per step (`train.head_fraction` inside the
  head, `train.mouth_fraction` around the mouth), rendered over each frame's torso plate; L1
  (uncertainty-weighted after `train.uncertainty_start` of the stage) + opacity entropy + the facial-aware
  masked-attention losses.
- **lips**: P x P patches around the mouth, one per frame (`train.frames_per_batch` frames); L1 +
  `lips_ssim_weight`·(1 - SSIM) + `lips_gradient_weight`·gradient loss (the documented fallback for a perceptual
  loss).
- **torso**: the head frozen; the torso model renders behind it, over the background plate; L1 + silhouette.
- **mouth**: the 2-D mouth generator and its audio → blendshape predictor (synctalk.train.mouth), which redraw
  lips and chin of every render from the audio.
- **portrait**: the Portrait-Sync Generator's restorer (synctalk.train.portrait), when the original video is
  available.

Validation sheets (`WORKSPACE/val/<stage>_<step>.png`, also in TensorBoard): per validation frame, ground truth |
render | error | audio attention | expression attention | head opacity. The attention maps are the head's
opacity-weighted mean attention per pixel: audio attention belongs on the mouth and jaw, expression attention
around the eyes and brows (the masked-attention losses push them there).

Workspace:
    config.yaml  checkpoints/<stage>/ckpt_*.pt, best.pt  tb/  train_log.json (stage status, times, metrics)

Every stage runs through the one step loop (synctalk.train.loop) and sees a narrow
:class:`~synctalk.train.stage.StageContext`; the pixel stages are in synctalk.train.stages. The head is whatever
representation ``model.head`` names (synctalk.models.registry); its box is measured from the subject once and kept
in ``train_log.json`` so that rendering rebuilds the same model.

A checkpoint holds the model, optimizer, scheduler, EMA weights, sampler and RNG states, so `--resume` (the
default when the workspace has checkpoints) continues at the same step with the same random draws. Ctrl-C writes a
checkpoint first; a non-finite loss stops with the last good checkpoint intact.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synctalk.config import SyncTalkConfig
from synctalk.data import SubjectDataset
from synctalk.data.contract import TRAIN_STEPS
from synctalk.errors import ConfigError, DatasetError
from synctalk.train.checkpoint import STAGES, CheckpointManager
from synctalk.train.stage import StageContext, TrainLog

log = logging.getLogger("synctalk.train")

PIXEL_STAGES = ("head", "lips", "torso")


@dataclass
class TrainReport:
    workspace: Path
    stages: dict = field(default_factory=dict)   # stage -> {"steps", "seconds", "val_psnr", ...}

    def lines(self) -> list[str]:
        """One line per stage: status, steps, time and the stage's own validation figure."""
        out = []
        for stage, info in self.stages.items():
            line = f"{stage:8s} {info.get('status', '')}: {info.get('step', 0)} steps in {info.get('seconds', 0):.0f} s"
            if info.get("val_psnr") is not None:
                where = "PSNR on a training frame (no validation frames)" if info.get("val_on_train") else \
                    "validation PSNR"
                line += f", {where} {info['val_psnr']:.2f} dB"
            if "val_region_psnr_restored" in info:
                line += (f", repair-region PSNR {info['val_region_psnr_paste']:.2f} dB (paste-back) -> "
                         f"{info['val_region_psnr_restored']:.2f} dB (restorer)")
            if "val_ellipse_psnr_predicted" in info:
                line += (f", mouth PSNR {info['val_ellipse_psnr_true']:.2f} dB (true blendshapes) / "
                         f"{info['val_ellipse_psnr_predicted']:.2f} (from the audio) / "
                         f"{info['val_ellipse_psnr_mean']:.2f} (mean mouth)")
            if info.get("kept") == "head":
                line += f" (kept the head stage's weights: lips scored {info['val_psnr_lips']:.2f} dB)"
            if "reason" in info:
                line += f" ({info['reason']})"
            out.append(line)
        return out


class Trainer:
    """Builds the models and the stage context of a workspace and runs the stages in order."""

    def __init__(self, subject: str | Path, workspace: str | Path, cfg: SyncTalkConfig, device="cpu",
                 progress: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        from synctalk.audio.workspace import workspace_features
        from synctalk.config import save_config
        from synctalk.models.registry import build_models, subject_spec
        from synctalk.models.subject import load_subject
        from synctalk.runtime import configure_precision, seed_everything

        seed_everything(cfg.seed)  # the same config gives the same initial weights and draws
        tcfg = cfg.train
        if tcfg.mouth_weight <= 0 and (tcfg.audio_grad == "mouth" or tcfg.mouth_warmup_steps > 0):
            raise ConfigError("train.audio_grad=mouth and train.mouth_warmup_steps need the mouth head: set "
                              "train.mouth_weight > 0 (e.g. 0.05)")
        self.ds = SubjectDataset(subject, require=TRAIN_STEPS, cache_frames=cfg.data.frame_cache)
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.workspace)
        self.cfg, self.tcfg = cfg, tcfg
        self.device = torch.device(device)
        configure_precision(self.device, tcfg.tf32)
        log.info("%s: %d frames; audio features (train.audio_backend=%s)", self.ds.root, len(self.ds),
                 tcfg.audio_backend)
        features, _ = workspace_features(self.ds, cfg, self.workspace, self.device)
        feature_shape = tuple(features.shape[1:])
        self.log = TrainLog(self.workspace / "train_log.json", {
            "subject": str(Path(subject).resolve()), "feature_shape": list(feature_shape), "n_frames": len(self.ds),
            "stages": {}})
        spec = subject_spec(cfg, feature_shape, len(self.ds), box=self._head_box())
        self.head, self.torso = build_models(cfg, spec, self.device)
        if not any((self.workspace / "checkpoints" / "head").glob("*.pt")):
            log.info("preparing the %s head from the subject", cfg.model.head)
            self.head.prepare(self.ds)  # a head stage that has not saved yet starts from the subject again
        self.data = load_subject(self.ds, self.device, self.head.expression_names, tcfg.poses, features)
        self.writer = SummaryWriter(str(self.workspace / "tb"))
        self.context = StageContext(self.workspace, cfg, self.device, self.ds, self.data, self.head, self.torso,
                                    self.writer, self.log, progress)

    def _head_box(self) -> tuple[float, ...] | None:
        """The head's world box: the one this workspace was started with, else measured from the subject's head
        masks across its poses (kept in train_log.json); None for workspaces trained before measured boxes (they
        keep the model's default box, which their checkpoints were made with)."""
        from synctalk.data.bounds import head_box

        state = self.log.state
        if "head_box" in state:
            return tuple(state["head_box"])
        if state["stages"]:
            return None
        try:
            box = head_box(self.ds, margin=self.cfg.model.head_box_margin)
        except DatasetError as exc:
            log.warning("could not measure the head's box (%s); training in the default box [-1, 1]^3, which may "
                        "cut off long or high hair", exc)
            box = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
        # rounded outward to 1 mm-ish steps so that the JSON copy rebuilds exactly the same model
        state["head_box"] = [math.floor(v * 1000) / 1000 for v in box[:3]] + [math.ceil(v * 1000) / 1000
                                                                              for v in box[3:]]
        self.log.write()
        log.info("head box (world units, from the head masks across %d frames): %s", len(self.ds),
                 state["head_box"])
        return tuple(state["head_box"])

    @property
    def state(self) -> dict:
        return self.log.state

    def redo(self, stages: tuple[str, ...]) -> None:
        """Forget finished or partial stages (their checkpoints and log entries) so that they train again."""
        for stage in stages:
            shutil.rmtree(self.workspace / "checkpoints" / stage, ignore_errors=True)
            self.log.state["stages"].pop(stage, None)
        self.log.write()

    def run(self, stages: tuple[str, ...] = STAGES) -> TrainReport:
        from synctalk.train.mouth import train_mouth
        from synctalk.train.portrait import train_portrait
        from synctalk.train.stages import run_pixel_stage

        budget_s = 60.0 * self.tcfg.budget_minutes
        pixel_stages = [s for s in stages if s in PIXEL_STAGES]  # the 2-D stages are small: no share
        total_steps = sum(self._steps(s) for s in pixel_stages) or 1
        for stage in pixel_stages:
            self._load_previous_stage_weights(stage)
            run_pixel_stage(self.context, stage, budget_s * self._steps(stage) / total_steps if budget_s > 0 else 0.0)
        if "mouth" in stages:
            train_mouth(self.context)
        if "portrait" in stages:
            self._load_previous_stage_weights("portrait")
            train_portrait(self.context)
        self.writer.close()
        return TrainReport(self.workspace, self.log.state["stages"])

    def _steps(self, stage: str) -> int:
        return getattr(self.tcfg, f"{stage}_steps")

    def _load_previous_stage_weights(self, stage: str) -> None:
        """A later stage starts from the finished earlier ones (their final checkpoints hold the EMA weights)."""
        for earlier in PIXEL_STAGES[:STAGES.index(stage)]:
            ckpt = CheckpointManager(self.workspace / "checkpoints" / earlier).load_latest(map_location=self.device)
            if ckpt is not None:
                (self.torso if earlier == "torso" else self.head).load_state_dict(ckpt["model"])


def train(subject: str | Path, workspace: str | Path, cfg: SyncTalkConfig, device="cpu", progress: bool = True,
          stages: tuple[str, ...] = STAGES, redo: tuple[str, ...] = ()) -> TrainReport:
    """Train the stages (see module docstring); resumes what the workspace holds, except the ``redo`` stages,
    which start over (e.g. the torso after changing its settings)."""
    check_workspace(workspace)
    check_head_trained(workspace, cfg, stages, redo)
    trainer = Trainer(subject, workspace, cfg, device, progress)
    trainer.redo(redo)
    return trainer.run(stages)


def is_workspace(folder: Path) -> bool:
    """Whether ``folder`` was written by `synctalk train` (its train log, or the config.yaml it writes first)."""
    from synctalk.io.outputs import written_config

    return (Path(folder) / "train_log.json").is_file() or written_config(folder)


def check_workspace(workspace: str | Path) -> None:
    """Before any work: the workspace is a folder that can be written, new, empty or a workspace (resumed)."""
    from synctalk.io.outputs import check_output_dir

    check_output_dir(workspace, "workspace", "-w", ours=is_workspace)


def check_head_trained(workspace: str | Path, cfg: SyncTalkConfig, stages: tuple[str, ...],
                       redo: tuple[str, ...] = ()) -> None:
    """Refuse a run whose lips, torso or portrait stage would start from an untrained head: the head stage is not
    in ``stages`` or has 0 steps, and the workspace holds no head checkpoint."""
    tcfg = cfg.train
    needing = [s for s in ("lips", "torso", "portrait") if s in stages and getattr(tcfg, f"{s}_steps") > 0]
    if not needing or ("head" in stages and tcfg.head_steps > 0):
        return
    if "head" not in redo and CheckpointManager(Path(workspace) / "checkpoints" / "head").steps():
        return
    why = "train.head_steps is 0" if "head" in stages else "--stages leaves out head"
    raise ConfigError(f"{why}, but the {', '.join(needing)} stage{'s' if len(needing) > 1 else ''} need a trained "
                      f"head and {workspace} has no head checkpoint: they would train on an untrained head. Train the "
                      f"head first (train.head_steps > 0, default {type(tcfg)().head_steps}, with head in --stages), "
                      f"or run only the stages that do not need it (--stages mouth)")
