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

A checkpoint holds the model, optimizer, scheduler, EMA weights, sampler and RNG states, so `--resume` (the
default when the workspace has checkpoints) continues at the same step with the same random draws. Ctrl-C writes a
checkpoint first; a non-finite loss stops with the last good checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from synctalk.config import SyncTalkConfig, TrainConfig
from synctalk.data import SubjectDataset
from synctalk.data.contract import TORSO_LABELS, TRAIN_STEPS
from synctalk.data.sampler import RayBatch, RaySampler
from synctalk.errors import SyncTalkError
from synctalk.io.atomic import atomic_write_json
from synctalk.models.frame import HEAD_MAPS, FrameInputs, FrameOutput, render_frame, scaled_intrinsics
from synctalk.train.checkpoint import CheckpointManager, capture_rng, restore_rng

log = logging.getLogger("synctalk.train")

STAGES = ("head", "lips", "torso", "mouth", "portrait")


@dataclass
class SubjectTensors:
    """What training reads per frame, as tensors on the training device (small: no images)."""

    features: torch.Tensor      # [N, ...] audio features
    expressions: torch.Tensor   # [N, E]
    mouth: torch.Tensor         # [N, 27] jaw/mouth blendshapes standardised over the training frames
    poses: torch.Tensor         # [N, 4, 4] c2w
    pose_vectors: torch.Tensor  # [N, 6]
    torso_tracks: torch.Tensor  # [N, 2, 3] canonical → frame (normalised)
    K: torch.Tensor             # [3, 3]
    train: list[int]
    val: list[int]


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
                line += f", validation PSNR {info['val_psnr']:.2f} dB"
            if "val_region_psnr_restored" in info:
                line += (f", repair-region PSNR {info['val_region_psnr_paste']:.2f} dB (paste-back) -> "
                         f"{info['val_region_psnr_restored']:.2f} dB (restorer)")
            if "val_ellipse_psnr_predicted" in info:
                line += (f", mouth PSNR {info['val_ellipse_psnr_true']:.2f} dB (true blendshapes) / "
                         f"{info['val_ellipse_psnr_predicted']:.2f} (from the audio) / "
                         f"{info['val_ellipse_psnr_mean']:.2f} (mean mouth)")
            if "reason" in info:
                line += f" ({info['reason']})"
            out.append(line)
        return out


EXPRESSION_PRESETS = {"upper7": None, "blink2": ("eyeBlinkLeft", "eyeBlinkRight"), "none": ()}


def expression_names(spec: str) -> tuple[str, ...]:
    """``train.expression`` → blendshape names: a preset (upper7, blink2, none) or comma-separated names."""
    from synctalk.models.head import DEFAULT_EXPRESSION_NAMES

    if spec in EXPRESSION_PRESETS:
        preset = EXPRESSION_PRESETS[spec]
        return DEFAULT_EXPRESSION_NAMES if preset is None else preset
    return tuple(name.strip() for name in spec.split(",") if name.strip())


def build_models(cfg: TrainConfig, feature_shape: tuple[int, ...], n_frames: int, device):
    """The head and torso models for a config (also used by render to rebuild them from a checkpoint)."""
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES, HeadFieldConfig, HeadModel, HeadModelConfig
    from synctalk.models.torso import TorsoConfig, TorsoModel

    names = expression_names(cfg.expression)
    field_cfg = HeadFieldConfig(num_levels=cfg.field_levels, base_resolution=cfg.field_base,
                                finest_resolution=cfg.field_finest, features_per_level=cfg.field_features,
                                log2_table_size=cfg.field_table_log2, density_hidden=cfg.hidden,
                                color_hidden=cfg.hidden, expression_names=names, expression_dim=len(names))
    head = HeadModel(HeadModelConfig(field=field_cfg, grid_resolution=cfg.grid_resolution, max_steps=cfg.max_steps,
                                     mouth_names=MOUTH_BLENDSHAPE_NAMES if cfg.mouth_weight > 0 else ()),
                     audio_feature_shape=feature_shape, n_frames=n_frames).to(device)
    torso = TorsoModel(TorsoConfig(), n_frames=n_frames).to(device)
    return head, torso


def workspace_features(ds: SubjectDataset, cfg: SyncTalkConfig, workspace: Path, device="cpu"
                       ) -> tuple[np.ndarray, dict]:
    """The audio features training uses: the subject's, or (``train.audio_backend`` set) that backend's features
    of the subject's audio, computed once into ``WORKSPACE/audio_features.npy`` (+ .json)."""
    backend = cfg.train.audio_backend
    info_path, array_path = workspace / "audio_features.json", workspace / "audio_features.npy"
    if backend == "subject":
        return np.asarray(ds.audio_features), json.loads((ds.root / "audio_features.json").read_text())
    if info_path.is_file() and array_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("backend") == backend:
            return np.load(array_path), info
    from synctalk.audio.features import compute_features
    from synctalk.io.atomic import atomic_save_npy

    checkpoint = cfg.audio.sync_checkpoint or (ds.root / "sync.pt")
    if backend == "ave" and not Path(checkpoint).is_file():
        raise SyncTalkError(f"train.audio_backend=ave needs a sync model: {checkpoint} is missing; set "
                            "audio.sync_checkpoint")
    result = compute_features(backend, ds.audio(), ds.meta["sample_rate_hz"], len(ds), ds.fps,
                              checkpoint=checkpoint if backend == "ave" else None, device=device)
    atomic_save_npy(array_path, result.features)
    atomic_write_json(info_path, result.info)
    return result.features, result.info


def load_subject(ds: SubjectDataset, device, expression_names, poses: str = "stabilised",
                 features: np.ndarray | None = None) -> SubjectTensors:
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES, expression_from_blendshapes
    from synctalk.models.torso import pose_vector

    c2w = torch.as_tensor(np.array(ds.poses if poses == "stabilised" else ds.poses_raw), dtype=torch.float32,
                          device=device)
    blend = torch.as_tensor(np.array(ds.blendshapes), dtype=torch.float32, device=device)
    features = np.asarray(ds.audio_features) if features is None else features
    mouth = expression_from_blendshapes(blend, MOUTH_BLENDSHAPE_NAMES)
    train_mouth = mouth[ds.split("train")]
    return SubjectTensors(
        features=torch.as_tensor(np.array(features), dtype=torch.float32, device=device),
        expressions=expression_from_blendshapes(blend, expression_names),
        mouth=(mouth - train_mouth.mean(0)) / train_mouth.std(0).clamp_min(1e-3),
        poses=c2w, pose_vectors=pose_vector(c2w),
        torso_tracks=torch.as_tensor(np.array(ds.torso_track), dtype=torch.float32, device=device),
        K=torch.as_tensor(ds.intrinsics, dtype=torch.float32, device=device),
        train=ds.split("train"), val=ds.split("val") or ds.split("train")[-1:])


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point and self.decay > 0:
                self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}


def heat_map(values: torch.Tensor) -> torch.Tensor:
    """`[H, W]` values in [0, 1] → `[H, W, 3]` inferno colours (for attention and opacity maps)."""
    from matplotlib import colormaps

    rgb = colormaps["inferno"](values.clamp(0, 1).cpu().numpy())[..., :3]
    return torch.as_tensor(rgb, dtype=torch.float32, device=values.device)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


class Trainer:
    def __init__(self, subject: str | Path, workspace: str | Path, cfg: SyncTalkConfig, device="cpu",
                 progress: bool = True):
        from synctalk.config import save_config
        from synctalk.runtime import seed_everything

        seed_everything(cfg.seed)  # the same config gives the same initial weights and draws
        self.ds = SubjectDataset(subject, require=TRAIN_STEPS, cache_frames=cfg.data.frame_cache)
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.workspace)
        self.cfg, self.tcfg = cfg, cfg.train
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tcfg.tf32
        self.progress = progress
        if self.tcfg.mouth_weight <= 0 and (self.tcfg.audio_grad == "mouth" or self.tcfg.mouth_warmup_steps > 0):
            from synctalk.errors import ConfigError

            raise ConfigError("train.audio_grad=mouth and train.mouth_warmup_steps need the mouth head: set "
                              "train.mouth_weight > 0 (e.g. 0.05)")
        features, _ = workspace_features(self.ds, cfg, self.workspace, self.device)
        feature_shape = tuple(features.shape[1:])
        self.head, self.torso = build_models(self.tcfg, feature_shape, len(self.ds), self.device)
        self.data = load_subject(self.ds, self.device, self.head.config.field.expression_names, self.tcfg.poses,
                                 features)
        self.log_path = self.workspace / "train_log.json"
        self.state = json.loads(self.log_path.read_text()) if self.log_path.is_file() else {
            "subject": str(Path(subject).resolve()), "feature_shape": list(feature_shape),
            "n_frames": len(self.ds), "stages": {}}
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.workspace / "tb"))

    # ------------------------------------------------------------------------------------------------ stages
    def redo(self, stages: tuple[str, ...]) -> None:
        """Forget finished or partial stages (their checkpoints and log entries) so that they train again."""
        import shutil

        for stage in stages:
            shutil.rmtree(self.workspace / "checkpoints" / stage, ignore_errors=True)
            self.state["stages"].pop(stage, None)
        self._write_log()

    def run(self, stages: tuple[str, ...] = STAGES) -> TrainReport:
        from synctalk.train.mouth import train_mouth
        from synctalk.train.portrait import train_portrait

        budget_s = 60.0 * self.tcfg.budget_minutes
        ray_stages = [s for s in stages if s in ("head", "lips", "torso")]  # the 2-D stages are small: no share
        total_steps = sum(self._steps(s) for s in ray_stages) or 1
        for stage in ray_stages:
            stage_budget = budget_s * self._steps(stage) / total_steps if budget_s > 0 else 0.0
            self._run_stage(stage, stage_budget)
        if "mouth" in stages:
            train_mouth(self)
        if "portrait" in stages:
            self._load_previous_stage_weights("portrait")
            train_portrait(self)
        self.writer.close()
        return TrainReport(self.workspace, self.state["stages"])

    def _steps(self, stage: str) -> int:
        return {"head": self.tcfg.head_steps, "lips": self.tcfg.lips_steps, "torso": self.tcfg.torso_steps}[stage]

    @property
    def torso_trained(self) -> bool:
        return CheckpointManager(self.workspace / "checkpoints" / "torso").load_latest() is not None

    def _modules(self, stage: str) -> torch.nn.Module:
        return self.torso if stage == "torso" else self.head

    def _optimizer(self, stage: str):
        groups = self._modules(stage).param_groups(self.tcfg.lr_grid, self.tcfg.lr_mlp)
        optimizer = torch.optim.AdamW(groups)
        steps = max(1, self._steps(stage))
        gamma = self.tcfg.lr_final ** (1.0 / steps)
        return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)

    def _load_previous_stage_weights(self, stage: str) -> None:
        """A later stage starts from the finished earlier ones (their EMA weights when kept)."""
        for earlier in ("head", "lips", "torso")[:STAGES.index(stage)]:
            ckpt = CheckpointManager(self.workspace / "checkpoints" / earlier).load_latest()
            if ckpt is not None:
                self._modules(earlier).load_state_dict(ckpt["model"])

    def _run_stage(self, stage: str, budget_s: float) -> None:
        from tqdm import tqdm

        steps = self._steps(stage)
        info = self.state["stages"].setdefault(stage, {"status": "pending"})
        if steps <= 0 or info.get("status") == "done":
            return
        self._load_previous_stage_weights(stage)
        module = self._modules(stage)
        module.train()
        optimizer, scheduler = self._optimizer(stage)
        manager = CheckpointManager(self.workspace / "checkpoints" / stage, self.tcfg.keep_last)
        sampler = RaySampler(self.ds, self.data.train, self.tcfg.rays, seed=self.cfg.seed,
                             head_fraction=self.tcfg.head_fraction, behind="background" if stage == "torso"
                             else "torso", patch=self.tcfg.patch if stage == "lips" else 0,
                             focus="torso" if stage == "torso" else "head", box_fraction=self.tcfg.box_fraction,
                             mouth_fraction=self.tcfg.mouth_fraction if stage == "head" else 0.0,
                             frames_per_batch=self.tcfg.frames_per_batch)
        step, elapsed = 0, 0.0
        resume = manager.load_latest()
        if resume is None and stage == "head":
            elapsed = self._warm_up_audio()  # before the EMA copies the weights
        if resume is None and stage == "torso":
            self._set_torso_prior()
        ema = EMA(module, self.tcfg.ema_decay)
        if resume is not None:
            module.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            ema.load_state_dict(resume["ema"])
            sampler.set_state(resume["sampler"])
            restore_rng(resume["rng"])
            step, elapsed = resume["step"], resume["elapsed_s"]
            log.info("%s stage: resuming at step %d", stage, step)

        def save(metric: float | None = None) -> None:
            manager.save(step, {"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "ema": ema.state_dict(),
                                "sampler": sampler.state(), "rng": capture_rng(), "elapsed_s": elapsed,
                                "config": asdict(self.tcfg), "stage": stage}, metric=metric)

        info.update(status="running", steps=steps)
        self._write_log()
        bar = tqdm(total=steps, initial=step, desc=f"train {stage}", unit="step",
                   disable=None if self.progress else True)
        try:
            while step < steps and not (budget_s > 0 and elapsed >= budget_s):
                t0 = time.perf_counter()
                batch = sampler.sample()
                losses = self._losses(stage, batch, step)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise SyncTalkError(f"{stage} stage: the loss became {loss.item()} at step {step} "
                                        f"({ {k: v.item() for k, v in losses.items()} }); the last good "
                                        f"checkpoint is in {manager.folder}. Lower train.lr_grid / "
                                        f"train.lr_mlp and run again (it resumes).")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                ema.update(module)
                step += 1
                if stage == "head" and step % self.head.config.grid_update_every == 0:
                    self._update_grid(step)
                elapsed += time.perf_counter() - t0
                bar.update(1)
                if step % self.tcfg.log_every == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    for name, value in losses.items():
                        self.writer.add_scalar(f"{stage}/{name}", value.item(), step)
                    for group in optimizer.param_groups:
                        self.writer.add_scalar(f"{stage}/lr_{group.get('name', 'group')}", group["lr"], step)
                metric = None
                if step % self.tcfg.eval_every == 0 or step == steps:
                    metric = self.evaluate(stage, step, ema)
                    info["val_psnr"] = metric
                if step % self.tcfg.checkpoint_every == 0 or step == steps or metric is not None:
                    save(metric)
        except KeyboardInterrupt:
            save()
            info.update(status="interrupted", step=step, seconds=round(elapsed, 1))
            self._write_log()
            log.warning("interrupted: %s stage saved at step %d; run the same command again to resume", stage, step)
            raise
        finally:
            bar.close()
        if step < steps:
            log.info("%s stage: time budget reached at step %d of %d", stage, step, steps)
            info["val_psnr"] = self.evaluate(stage, step, ema)
            save(info["val_psnr"])
        module.load_state_dict(ema.state_dict())  # later stages and rendering use the EMA weights
        save(info.get("val_psnr"))
        info.update(status="done", step=step, seconds=round(elapsed, 1))
        self._write_log()

    def _write_log(self) -> None:
        atomic_write_json(self.log_path, self.state)

    # ------------------------------------------------------------------------------------------------ maths
    def _rays(self, batch: RayBatch):
        from synctalk.render.rays import generate_rays

        pixels = torch.as_tensor(batch.pixels, device=self.device)
        return generate_rays(self.data.poses[self._frames(batch)], self.data.K, pixels)

    def _frames(self, batch: RayBatch) -> torch.Tensor:
        return torch.as_tensor(batch.frames, device=self.device)

    def _head_outputs(self, frames: torch.Tensor, rays_o, rays_d, behind, early_stop_eps: float = 0.0):
        """Head render of rays whose frames are `frames` [R] (one audio code per distinct frame), with the
        distinct frames and their codes added as ``frames`` [F] and ``audio_codes`` [F, A]."""
        unique, ray_rows = torch.unique(frames, return_inverse=True)
        codes = self.head.encode_audio(self.data.features, unique)
        seen = codes.detach() if self.tcfg.audio_grad == "mouth" and self.head.mouth_head is not None else codes
        if self.tcfg.audio_noise > 0 and torch.is_grad_enabled():
            seen = seen + self.tcfg.audio_noise * seen.detach().pow(2).mean().sqrt() * torch.randn_like(seen)
        out = self.head.render(rays_o, rays_d, seen[ray_rows], self.data.expressions[frames], frame_indices=frames,
                               background=behind, early_stop_eps=early_stop_eps)
        return {**out, "frames": unique, "audio_codes": codes}

    def _mouth_loss(self, frames: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the mouth blendshapes predicted from the audio codes of `frames` (standardised)."""
        return torch.mean((self.head.predict_mouth(codes) - self.data.mouth[frames]) ** 2)

    def _warm_up_audio(self) -> float:
        """Fit the audio net and mouth head to the training frames' mouth blendshapes (full batch, Adam), so the
        head stage starts with audio codes that already carry the mouth's state. Returns the seconds it took."""
        steps = self.tcfg.mouth_warmup_steps if self.head.mouth_head is not None else 0
        if steps <= 0:
            return 0.0
        t0 = time.perf_counter()
        frames = torch.as_tensor(self.data.train, device=self.device)
        params = list(self.head.audio_net.parameters()) + list(self.head.mouth_head.parameters())
        optimizer = torch.optim.Adam(params, lr=self.tcfg.lr_mlp)
        for _ in range(steps):
            loss = self._mouth_loss(frames, self.head.encode_audio(self.data.features, frames))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        log.info("audio warm-up: mouth blendshape MSE %.3f (standardised) after %d steps", loss.item(), steps)
        return time.perf_counter() - t0

    def _losses(self, stage: str, batch: RayBatch, step: int) -> dict[str, torch.Tensor]:
        from synctalk.models.losses import HeadLossWeights, lip_patch_loss, mask_loss
        from synctalk.models.torso import composite_layers, normalize_pixels

        target = torch.as_tensor(batch.target, device=self.device)
        behind = torch.as_tensor(batch.behind, device=self.device)
        rays_o, rays_d = self._rays(batch)
        frames = self._frames(batch)
        if stage == "torso":
            with torch.no_grad():
                head = self._head_outputs(frames, rays_o, rays_d, None)
            pixels = normalize_pixels(torch.as_tensor(batch.pixels, device=self.device).float(), self.ds.width,
                                      self.ds.height)
            torso = self.torso.render(pixels, self.data.pose_vectors[frames], frame_indices=frames,
                                      track=self.data.torso_tracks[frames])
            rgb = composite_layers(head["rgb"], head["opacity"], torso["rgb"], torso["alpha"], behind)
            losses = {"l1": (rgb - target).abs().mean()}
            if self.tcfg.torso_mask_weight > 0:
                outside_head = torch.as_tensor(~batch.head, device=self.device).float()
                losses["mask"] = self.tcfg.torso_mask_weight * mask_loss(
                    torso["alpha"], torch.as_tensor(batch.torso, device=self.device), outside_head)
            return losses
        out = self._head_outputs(frames, rays_o, rays_d, behind)
        lower = torch.as_tensor(batch.lower_face, device=self.device)
        # the lips stage keeps plain L1 (its patch losses carry the detail)
        start = (int(self.tcfg.uncertainty_start * self.tcfg.head_steps)
                 if stage == "head" and self.tcfg.uncertainty_start < 1 else 2 ** 62)
        weights = HeadLossWeights(uncertainty_start=start, mask=self.tcfg.mask_weight, entropy=self.tcfg.entropy_weight,
                                  audio_attention=self.tcfg.attention_weight,
                                  expression_attention=self.tcfg.attention_weight)
        losses = self.head.get_losses(out, target, lower_face=lower, step=step, weights=weights,
                                      head_mask=torch.as_tensor(batch.head, device=self.device))
        if self.head.mouth_head is not None:
            losses["mouth"] = self.tcfg.mouth_weight * self._mouth_loss(out["frames"], out["audio_codes"])
        if stage == "lips":
            p = batch.patch
            pred = out["rgb"].reshape(-1, p, p, 3).permute(0, 3, 1, 2)
            gt = target.reshape(-1, p, p, 3).permute(0, 3, 1, 2)
            losses["lips"] = lip_patch_loss(pred, gt, self.tcfg.lips_ssim_weight, self.tcfg.lips_gradient_weight)
        return losses

    def _set_torso_prior(self, max_frames: int = 200) -> None:
        """The torso starts as the training frames' mean torso (up to `max_frames` evenly spaced frames), each frame
        aligned by its torso track."""
        from synctalk.models.torso import torso_prior, warp_to_canonical

        train = np.asarray(self.data.train)
        frames = train[np.linspace(0, len(train) - 1, min(max_frames, len(train))).round().astype(int)]
        tracks = np.asarray(self.ds.torso_track)
        rgb, alpha = torso_prior(((warp_to_canonical(self.ds.gt(int(f)), tracks[f]),
                                   warp_to_canonical(self.ds.parsing(int(f)), tracks[f], nearest=True))
                                  for f in frames), TORSO_LABELS)
        self.torso.set_prior(rgb, alpha)
        picture = torch.cat([rgb * alpha[..., None], alpha[..., None].expand_as(rgb)], dim=1)
        self.writer.add_image("torso/prior (mean torso premultiplied | alpha)", picture.permute(2, 0, 1), 0)

    def _update_grid(self, step: int) -> None:
        frames = torch.as_tensor(np.random.default_rng(step).choice(self.data.train, 8), device=self.device)
        with torch.no_grad():
            codes = self.head.encode_audio(self.data.features, frames)
        self.head.update_occupancy(step, codes, self.data.expressions[frames])

    # ------------------------------------------------------------------------------------------------ eval
    def _image(self, image: np.ndarray, size: int) -> torch.Tensor:
        """uint8 `[H, W, 3]` → float `[size, size, 3]` in [0, 1] (area filter)."""
        tensor = torch.as_tensor(np.array(image), device=self.device).float().permute(2, 0, 1)[None] / 255
        return torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")[0].permute(1, 2, 0)

    def frame_inputs(self, frame: int) -> FrameInputs:
        """The conditioning of a subject frame: its pose, audio, expression and appearance code."""
        return FrameInputs(c2w=self.data.poses[frame], audio_code=self.head.encode_audio(self.data.features, frame),
                           expression=self.data.expressions[frame], torso_pose=self.data.pose_vectors[frame],
                           torso_track=self.data.torso_tracks[frame], appearance_frame=frame)

    @torch.no_grad()
    def render_frame(self, frame: int, size: int, with_torso: bool) -> FrameOutput:
        """A validation render `[size, size]` of a frame: the head over the torso model over the background plate,
        or (`with_torso=False`) the head over the frame's torso plate."""
        from synctalk.io.images import read_image

        behind = read_image(self.ds.root / "background.png") if with_torso else self.ds.torso(frame)
        return render_frame(self.head, self.torso if with_torso else None, self.frame_inputs(frame),
                            scaled_intrinsics(self.data.K, size / self.ds.width), size, size,
                            self._image(behind, size))

    @torch.no_grad()
    def evaluate(self, stage: str, step: int, ema: EMA) -> float:
        module = self._modules(stage)
        current = {k: v.clone() for k, v in module.state_dict().items()}
        module.load_state_dict(ema.state_dict())
        module.eval()
        size = self.tcfg.eval_size
        frames = np.linspace(0, len(self.data.val) - 1, min(self.tcfg.eval_frames, len(self.data.val))).round()
        scores, images = [], []
        for k in frames.astype(int):
            frame = self.data.val[k]
            out = self.render_frame(frame, size, with_torso=stage == "torso")
            pred, maps = out.rgb, out.maps
            gt = self._image(self.ds.gt(frame), size)
            scores.append(psnr(pred, gt))
            error = (pred.clamp(0, 1) - gt).abs().mean(-1, keepdim=True).expand(-1, -1, 3)
            images.append(torch.cat([gt, pred.clamp(0, 1), error.clamp(0, 1)]
                                    + [heat_map(maps[name]) for name in HEAD_MAPS], 1))
        module.load_state_dict(current)
        module.train()
        value = float(np.mean(scores))
        sheet = torch.cat(images, 0)
        self.writer.add_scalar(f"{stage}/val_psnr", value, step)
        self.writer.add_image(f"{stage}/val (gt | render | error | audio att. | expression att. | opacity)",
                              sheet.permute(2, 0, 1), step)
        from synctalk.io.images import write_image

        (self.workspace / "val").mkdir(exist_ok=True)
        write_image(self.workspace / "val" / f"{stage}_{step:07d}.png", (sheet.cpu().numpy() * 255).round()
                    .astype(np.uint8))
        log.info("%s step %d: validation PSNR %.2f dB", stage, step, value)
        return value


def train(subject: str | Path, workspace: str | Path, cfg: SyncTalkConfig, device="cpu", progress: bool = True,
          stages: tuple[str, ...] = STAGES, redo: tuple[str, ...] = ()) -> TrainReport:
    """Train the stages (see module docstring); resumes what the workspace holds, except the ``redo`` stages,
    which start over (e.g. the torso after changing its settings)."""
    trainer = Trainer(subject, workspace, cfg, device, progress)
    trainer.redo(redo)
    return trainer.run(stages)
