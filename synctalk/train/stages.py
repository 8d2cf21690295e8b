"""The pixel stages of `synctalk train`: head, lips and torso (the 2-D stages are synctalk.train.mouth, .portrait).

Each stage is a small object over a :class:`~synctalk.train.stage.StageContext`: which module it trains, how it
draws a batch (a :class:`~synctalk.data.sampler.RaySampler`), its loss terms, and what it does before its first step
(the head's audio warm-up, the torso's mean-torso prior). :func:`run_pixel_stage` runs any of them through the one
step loop.

- **head**: random pixels of ``train.frames_per_batch`` frames, the head over each frame's torso plate; the head's
  own losses (L1, uncertainty after ``train.uncertainty_start``, silhouette, entropy, masked attention) and, with
  ``train.mouth_weight``, the mouth-blendshape loss on the audio codes. The head's step hooks run (occupancy grid).
- **lips**: P x P patches around the mouth; plain L1 + ``lips_lpips_weight``·LPIPS (AlexNet) when its weights are in
  the model cache, else ``lips_ssim_weight``·(1 - SSIM) + ``lips_gradient_weight``· gradient loss. The stage keeps
  the head's weights when it does not beat them on validation.
- **torso**: the head frozen; the torso model behind it over the background plate; L1 + silhouette.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from synctalk.data.contract import TORSO_LABELS
from synctalk.data.frames import to_device
from synctalk.data.sampler import RaySampler
from synctalk.train.checkpoint import CheckpointManager
from synctalk.train.stage import StageContext, StageRun

__all__ = ["HeadStage", "LipsStage", "PIXEL_STAGES", "TorsoStage", "run_pixel_stage"]

log = logging.getLogger("synctalk.train")


class PixelStage:
    """Common parts of the head, lips and torso stages."""

    name = ""
    behind = "torso"      # what the sampler puts behind the head: the frame's torso plate or the background plate
    focus = "head"

    def __init__(self, ctx: StageContext):
        self.ctx, self.tcfg = ctx, ctx.tcfg
        self.optim = None  # set by run_pixel_stage (the head's step hooks may reset rows of its state)

    @property
    def steps(self) -> int:
        return getattr(self.tcfg, f"{self.name}_steps")

    @property
    def module(self) -> torch.nn.Module:
        return self.ctx.head

    @property
    def whole_images(self) -> bool:
        """The head stage of a head that learns from whole frames (Gaussians): each batch is the frames' every
        pixel (a patch the size of the frame)."""
        return self.name == "head" and self.ctx.head.supervision == "images"

    def sampler(self) -> RaySampler:
        tcfg, ctx = self.tcfg, self.ctx
        patch = tcfg.patch if self.name == "lips" else 0
        if self.whole_images:
            patch = max(ctx.ds.width, ctx.ds.height)
        return RaySampler(ctx.ds, ctx.data.train, tcfg.rays, seed=ctx.cfg.seed, head_fraction=tcfg.head_fraction,
                          behind=self.behind, patch=patch, focus=self.focus,
                          box_fraction=tcfg.box_fraction,
                          mouth_fraction=tcfg.mouth_fraction if self.name == "head" else 0.0,
                          frames_per_batch=tcfg.frames_per_batch, device=ctx.device,
                          budget_mb=ctx.cfg.data.preload_mb, lookahead=ctx.cfg.data.lookahead)

    def optimizer(self):
        groups = self.module.param_groups(self.tcfg.lr_grid, self.tcfg.lr_mlp)
        # on CUDA one fused kernel updates every tensor (the step counters then live on the device too)
        optimizer = torch.optim.AdamW(groups, fused=self.ctx.device.type == "cuda")
        gamma = self.tcfg.lr_final ** (1.0 / max(1, self.steps))
        return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)

    def start(self) -> float:
        """Before the first step of a fresh stage (not on resume); returns seconds spent (counted as training)."""
        return 0.0

    def after_step(self, step: int) -> None:
        """After each optimiser step."""

    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def finish(self, run: StageRun) -> None:
        """After the last step, with the EMA weights loaded."""

    # ------------------------------------------------------------------------------------------- shared maths
    def head_outputs(self, batch, behind) -> dict[str, torch.Tensor]:
        """Head render of a batch (one audio code per distinct frame), with the distinct frames and their codes
        added as ``frames`` [F] and ``audio_codes`` [F, A]."""
        ctx, tcfg, head = self.ctx, self.tcfg, self.ctx.head
        frames = batch.frames
        codes = head.encode_audio(ctx.data.features, batch.frame_ids)
        seen = codes.detach() if tcfg.audio_grad == "mouth" and getattr(head, "mouth_head", None) is not None \
            else codes
        if tcfg.audio_noise > 0 and torch.is_grad_enabled():
            seen = seen + tcfg.audio_noise * seen.detach().pow(2).mean().sqrt() * torch.randn_like(seen)
        out = head.render_pixels(ctx.data.poses[frames], ctx.data.K, batch.pixels, seen[batch.ray_rows],
                                 ctx.data.expressions[frames], appearance_frames=frames, background=behind)
        return {**out, "frames": batch.frame_ids, "audio_codes": codes}

    def mouth_loss(self, frames: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the mouth blendshapes predicted from the audio codes of `frames` (standardised)."""
        return torch.mean((self.ctx.head.predict_mouth(codes) - self.ctx.data.mouth[frames]) ** 2)

    def head_losses(self, batch, step: int, uncertainty_start: int) -> dict[str, torch.Tensor]:
        from synctalk.models.base import PixelRegions
        from synctalk.models.losses import HeadLossWeights

        ctx, tcfg = self.ctx, self.tcfg
        target = batch.target
        out = self.head_outputs(batch, batch.behind)
        weights = HeadLossWeights(uncertainty_start=uncertainty_start, mask=tcfg.mask_weight,
                                  entropy=tcfg.entropy_weight, audio_attention=tcfg.attention_weight,
                                  expression_attention=tcfg.attention_weight)
        whole = batch.patch and batch.patch >= max(ctx.ds.width, ctx.ds.height)
        regions = PixelRegions(head=batch.head, lower_face=batch.lower_face,
                               image_size=(ctx.ds.height, ctx.ds.width) if whole else None)
        losses = ctx.head.losses(out, target, regions, step, weights)
        if getattr(ctx.head, "mouth_head", None) is not None:
            losses["mouth"] = tcfg.mouth_weight * self.mouth_loss(out["frames"], out["audio_codes"])
        return losses, out, target


class HeadStage(PixelStage):
    name = "head"

    def start(self) -> float:
        """Fit the audio net and mouth head to the training frames' mouth blendshapes (full batch, Adam), so the
        stage starts with audio codes that already carry the mouth's state."""
        head, tcfg, data = self.ctx.head, self.tcfg, self.ctx.data
        steps = tcfg.mouth_warmup_steps if getattr(head, "mouth_head", None) is not None else 0
        if steps <= 0:
            return 0.0
        from synctalk.progress import track

        t0 = time.perf_counter()
        frames = torch.as_tensor(data.train, device=self.ctx.device)
        params = list(head.audio_net.parameters()) + list(head.mouth_head.parameters())
        optimizer = torch.optim.Adam(params, lr=tcfg.lr_mlp)
        for _ in track(range(steps), "head: audio warm-up", unit="step", leave=False, enabled=self.ctx.progress):
            loss = self.mouth_loss(frames, head.encode_audio(data.features, frames))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        log.info("audio warm-up: mouth blendshape MSE %.3f (standardised) after %d steps", loss.item(), steps)
        return time.perf_counter() - t0

    def conditions(self, k: int, seed: int):
        """Audio codes and expressions of ``k`` training frames drawn with ``seed`` (for the head's hooks)."""
        data = self.ctx.data
        frames = to_device(np.random.default_rng(seed).choice(data.train, k), self.ctx.device)
        with torch.no_grad():
            codes = self.ctx.head.encode_audio(data.features, frames)
        return codes, data.expressions[frames]

    def after_step(self, step: int) -> None:
        self.ctx.head.after_step(step, self.conditions, self.optim)

    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        start = (int(self.tcfg.uncertainty_start * self.tcfg.head_steps) if self.tcfg.uncertainty_start < 1
                 else 2 ** 62)
        return self.head_losses(batch, step, start)[0]


class LipsStage(PixelStage):
    name = "lips"

    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        from synctalk.models.losses import lip_patch_loss, optional_lpips

        losses, out, target = self.head_losses(batch, step, 2 ** 62)  # plain L1: the patch losses carry the detail
        p = batch.patch
        pred = out["rgb"].reshape(-1, p, p, 3).permute(0, 3, 1, 2)
        gt = target.reshape(-1, p, p, 3).permute(0, 3, 1, 2)
        lpips = optional_lpips(self.tcfg.lips_lpips_weight, pred.device, "lips stage")
        self.patch_loss = "lpips" if lpips is not None else "ssim+gradient"
        losses["lips_lpips" if lpips is not None else "lips"] = lip_patch_loss(
            pred, gt, self.tcfg.lips_ssim_weight, self.tcfg.lips_gradient_weight, lpips=lpips,
            lpips_weight=self.tcfg.lips_lpips_weight)
        return losses

    def finish(self, run: StageRun) -> None:
        """Keep the head stage's weights when the lips stage scores lower on validation (it trades PSNR for
        sharper lips, and must not make the model worse)."""
        if getattr(self, "patch_loss", None):
            run.info["patch_loss"] = self.patch_loss   # which lip-patch loss trained: lpips or the fallback
        before = self.ctx.log.stage("head").get("val_psnr")
        after = run.info.get("val_psnr")
        if before is None or after is None or after >= before:
            return
        ckpt = CheckpointManager(self.ctx.workspace / "checkpoints" / "head").load_latest(map_location=self.ctx.device)
        if ckpt is None:
            return
        self.module.load_state_dict(ckpt["model"])
        if run.loop.ema is not None:
            run.loop.ema.load_state_dict(ckpt["model"])
        run.info.update(val_psnr=before, kept="head", val_psnr_lips=after)
        log.warning("lips stage: validation PSNR %.2f dB < head stage's %.2f dB; keeping the head stage's weights",
                    after, before)


class TorsoStage(PixelStage):
    name = "torso"
    behind = "background"
    focus = "torso"

    @property
    def module(self) -> torch.nn.Module:
        return self.ctx.torso

    def start(self, max_frames: int = 200) -> float:
        """The torso starts as the training frames' mean torso (up to `max_frames` evenly spaced frames), each frame
        aligned by its torso track."""
        from synctalk.data.affine import warp_to_canonical
        from synctalk.models.torso import torso_prior
        from synctalk.progress import track

        ds, ctx = self.ctx.ds, self.ctx
        train = np.asarray(ctx.data.train)
        frames = train[np.linspace(0, len(train) - 1, min(max_frames, len(train))).round().astype(int)]
        tracks = np.asarray(ds.torso_track)
        rgb, alpha = torso_prior(((warp_to_canonical(ds.gt(int(f)), tracks[f]),
                                   warp_to_canonical(ds.parsing(int(f)), tracks[f], nearest=True))
                                  for f in track(frames, "torso: mean torso", unit="frame", leave=False,
                                                 enabled=ctx.progress)), TORSO_LABELS)
        ctx.torso.set_prior(rgb, alpha)
        picture = torch.cat([rgb * alpha[..., None], alpha[..., None].expand_as(rgb)], dim=1)
        ctx.writer.add_image("torso/prior (mean torso premultiplied | alpha)", picture.permute(2, 0, 1), 0)
        return 0.0

    def losses(self, batch, step: int) -> dict[str, torch.Tensor]:
        from synctalk.models.losses import mask_loss
        from synctalk.models.torso import composite_layers, normalize_pixels

        ctx, tcfg = self.ctx, self.tcfg
        frames = batch.frames
        with torch.no_grad():
            head = self.head_outputs(batch, None)
        pixels = normalize_pixels(batch.pixels.float(), ctx.ds.width, ctx.ds.height)
        torso = ctx.torso.render(pixels, ctx.data.pose_vectors[frames], frame_indices=frames,
                                 track=ctx.data.torso_tracks[frames])
        rgb = composite_layers(head["rgb"], head["opacity"], torso["rgb"], torso["alpha"], batch.behind)
        losses = {"l1": (rgb - batch.target).abs().mean()}
        if tcfg.torso_mask_weight > 0:
            losses["mask"] = tcfg.torso_mask_weight * mask_loss(torso["alpha"], batch.torso, (~batch.head).float())
        return losses


PIXEL_STAGES = {stage.name: stage for stage in (HeadStage, LipsStage, TorsoStage)}


def run_pixel_stage(ctx: StageContext, name: str, budget_s: float) -> None:
    """Train one pixel stage to its step count or ``budget_s`` seconds; resumes what its checkpoints hold."""
    stage = PIXEL_STAGES[name](ctx)
    info = ctx.log.stage(name)
    if stage.steps <= 0 or info.get("status") == "done":
        return
    module = stage.module
    module.train()
    optimizer, scheduler = stage.optimizer()
    stage.optim = optimizer
    sampler = stage.sampler()
    resumable = CheckpointManager(ctx.workspace / "checkpoints" / name).load_latest() is not None
    warm_up = 0.0 if resumable else stage.start()  # before the EMA copies the weights
    run = StageRun(ctx, name, module, optimizer, scheduler, steps=stage.steps, budget_s=budget_s,
                   eval_every=ctx.tcfg.eval_every, sampler=sampler,
                   hint="Lower train.lr_grid / train.lr_mlp and run again (it resumes).")
    if not run.resume():
        run.loop.elapsed = warm_up

    def evaluate(step: int) -> float:
        info["val_psnr"] = ctx.validate(name, step, module, run.loop.ema.state_dict() if run.loop.ema else None)
        return info["val_psnr"]

    try:
        run.run(lambda step: stage.losses(sampler.sample(), step), after_step=stage.after_step, evaluate=evaluate)
    finally:
        sampler.close()
    run.finish()
    module.train()
    stage.finish(run)
    run.save(info.get("val_psnr"))
    run.done()
