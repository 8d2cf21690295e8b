"""What a training stage sees (:class:`StageContext`) and how it runs (:class:`StageRun`).

A stage (synctalk.train.stages, .mouth, .portrait) gets the context, not the trainer: the subject, its per-frame
conditionings, the models, the config, TensorBoard and the workspace's train log. :class:`StageRun` gives it the
one step loop (synctalk.train.loop) with the stage's checkpoints (``WORKSPACE/checkpoints/<stage>/``) and its status
in ``train_log.json``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from synctalk.io.atomic import atomic_write_json
from synctalk.models.frame import HEAD_MAPS, FrameInputs, FrameOutput, render_frame, scaled_intrinsics
from synctalk.train.checkpoint import CheckpointManager
from synctalk.train.loop import LoopConfig, StepLoop

__all__ = ["GeneratorState", "StageContext", "StageRun", "TrainLog", "heat_map", "psnr"]

log = logging.getLogger("synctalk.train")


class TrainLog:
    """``train_log.json``: the subject, the head's spec and each stage's status, times and metrics."""

    def __init__(self, path: Path, initial: dict):
        self.path = path
        self.state = json.loads(path.read_text()) if path.is_file() else initial

    def stage(self, name: str) -> dict:
        return self.state["stages"].setdefault(name, {"status": "pending"})

    def write(self) -> None:
        atomic_write_json(self.path, self.state)


def heat_map(values: torch.Tensor) -> torch.Tensor:
    """`[H, W]` values in [0, 1] → `[H, W, 3]` inferno colours (for attention and opacity maps)."""
    from matplotlib import colormaps

    rgb = colormaps["inferno"](values.clamp(0, 1).cpu().numpy())[..., :3]
    return torch.as_tensor(rgb, dtype=torch.float32, device=values.device)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


@dataclass
class StageContext:
    """The narrow view of a training run that stages get."""

    workspace: Path
    cfg: object            # SyncTalkConfig
    device: torch.device
    ds: object             # SubjectDataset
    data: object           # synctalk.models.subject.SubjectTensors
    head: torch.nn.Module  # a synctalk.models.base.HeadRepresentation
    torso: torch.nn.Module
    writer: object         # TensorBoard SummaryWriter
    log: TrainLog
    progress: bool = True

    @property
    def tcfg(self):
        return self.cfg.train

    @property
    def torso_trained(self) -> bool:
        return CheckpointManager(self.workspace / "checkpoints" / "torso").load_latest() is not None

    def image(self, image: np.ndarray, size: int) -> torch.Tensor:
        """uint8 `[H, W, 3]` → float `[size, size, 3]` in [0, 1] (area filter)."""
        tensor = torch.as_tensor(np.array(image), device=self.device).float().permute(2, 0, 1)[None] / 255
        return torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0].permute(1, 2, 0)

    def frame_inputs(self, frame: int) -> FrameInputs:
        """The conditioning of a subject frame: its pose, audio, expression and appearance code."""
        data = self.data
        return FrameInputs(c2w=data.poses[frame], audio_code=self.head.encode_audio(data.features, frame),
                           expression=data.expressions[frame], torso_pose=data.pose_vectors[frame],
                           torso_track=data.torso_tracks[frame], appearance_frame=frame)

    @torch.no_grad()
    def render_frame(self, frame: int, size: int, with_torso: bool) -> FrameOutput:
        """A validation render `[size, size]` of a frame: the head over the torso model over the background plate,
        or (`with_torso=False`) the head over the frame's torso plate."""
        from synctalk.io.images import read_image

        behind = read_image(self.ds.root / "background.png") if with_torso else self.ds.torso(frame)
        return render_frame(self.head, self.torso if with_torso else None, self.frame_inputs(frame),
                            scaled_intrinsics(self.data.K, size / self.ds.width), size, size,
                            self.image(behind, size))

    @torch.no_grad()
    def validate(self, stage: str, step: int, module: torch.nn.Module, weights: dict | None) -> float:
        """Validation PSNR of ``stage`` on the held-out frames with ``weights`` (e.g. the EMA) loaded into
        ``module`` for the render; writes the sheet (gt | render | error | attention maps) to TensorBoard and
        ``WORKSPACE/val/``."""
        from synctalk.io.images import write_image

        current = {k: v.clone() for k, v in module.state_dict().items()} if weights is not None else None
        if weights is not None:
            module.load_state_dict(weights)
        module.eval()
        size = self.tcfg.eval_size
        frames = np.linspace(0, len(self.data.val) - 1, min(self.tcfg.eval_frames, len(self.data.val))).round()
        scores, images = [], []
        for k in frames.astype(int):
            frame = self.data.val[k]
            out = self.render_frame(frame, size, with_torso=stage == "torso")
            gt = self.image(self.ds.gt(frame), size)
            scores.append(psnr(out.rgb, gt))
            error = (out.rgb.clamp(0, 1) - gt).abs().mean(-1, keepdim=True).expand(-1, -1, 3)
            images.append(torch.cat([gt, out.rgb.clamp(0, 1), error.clamp(0, 1)]
                                    + [heat_map(out.maps[name]) for name in HEAD_MAPS], 1))
        if current is not None:
            module.load_state_dict(current)
        module.train()
        value = float(np.mean(scores))
        sheet = torch.cat(images, 0)
        self.writer.add_scalar(f"{stage}/val_psnr", value, step)
        self.writer.add_image(f"{stage}/val (gt | render | error | audio att. | expression att. | opacity)",
                              sheet.permute(2, 0, 1), step)
        (self.workspace / "val").mkdir(exist_ok=True)
        write_image(self.workspace / "val" / f"{stage}_{step:07d}.png",
                    (sheet.cpu().numpy() * 255).round().astype(np.uint8))
        if getattr(self.data, "val_is_train", False):  # no validation frames: say what the figure is
            self.log.stage(stage)["val_on_train"] = True
            log.info("%s step %d: PSNR %.2f dB on training frame %d (the subject has no validation frames)", stage,
                     step, value, self.data.val[0])
        else:
            log.info("%s step %d: validation PSNR %.2f dB", stage, step, value)
        return value


class StageRun:
    """One stage's :class:`StepLoop`, its checkpoints and its status in the train log.

    ``sampler`` (optional) has ``state()`` / ``set_state()`` (a batch sampler or a ``numpy.random.Generator``
    wrapper); its state goes into every checkpoint for exact resume. ``extra`` is stored in every checkpoint."""

    def __init__(self, ctx: StageContext, stage: str, module: torch.nn.Module, optimizer, scheduler=None, *,
                 steps: int, budget_s: float = 0.0, eval_every: int = 0, sampler=None, extra: dict | None = None,
                 hint: str = ""):
        tcfg = ctx.tcfg
        self.ctx, self.stage, self.module, self.sampler, self.extra = ctx, stage, module, sampler, extra or {}
        self.manager = CheckpointManager(ctx.workspace / "checkpoints" / stage, tcfg.keep_last)
        self.info = ctx.log.stage(stage)
        config = LoopConfig(steps=steps, budget_s=budget_s, ema_decay=tcfg.ema_decay, log_every=tcfg.log_every,
                            checkpoint_every=tcfg.checkpoint_every, eval_every=eval_every, hint=hint)
        self.loop = StepLoop(stage, module, optimizer, scheduler, config, save=self.save, writer=ctx.writer,
                             progress=ctx.progress, where=str(self.manager.folder))

    @property
    def step(self) -> int:
        return self.loop.step

    def resume(self) -> bool:
        """Continue from the stage's latest checkpoint, if any (tensors go to the training device)."""
        ckpt = self.manager.load_latest(map_location=self.ctx.device)
        if ckpt is None:
            return False
        self.loop.load(ckpt)
        if self.sampler is not None:
            self.sampler.set_state(ckpt["sampler"])
        log.info("%s stage: resuming at step %d", self.stage, self.loop.step)
        return True

    def save(self, metric: float | None = None) -> None:
        state = {**self.loop.state_dict(), "stage": self.stage, "config": asdict(self.ctx.tcfg), **self.extra}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state()
        self.manager.save(self.loop.step, state, metric=metric)

    def run(self, step_fn, after_step=None, evaluate=None) -> None:
        self.info.update(status="running", steps=self.loop.config.steps)
        self.ctx.log.write()
        try:
            self.loop.run(step_fn, after_step=after_step, evaluate=evaluate)
        except KeyboardInterrupt:
            self.info.update(status="interrupted", step=self.loop.step, seconds=round(self.loop.elapsed, 1))
            self.ctx.log.write()
            raise
        if self.loop.step < self.loop.config.steps:
            log.info("%s stage: time budget reached at step %d of %d", self.stage, self.loop.step,
                     self.loop.config.steps)

    def finish(self) -> None:
        """Load the EMA weights into the module for validation and later use (eval mode)."""
        self.loop.use_ema_weights()
        self.module.eval()

    def done(self) -> None:
        self.info.update(status="done", step=self.loop.step, seconds=round(self.loop.elapsed, 1))
        self.ctx.log.write()


class GeneratorState:
    """``state()`` / ``set_state()`` of a ``numpy.random.Generator`` (the batch RNG of the 2-D stages)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
