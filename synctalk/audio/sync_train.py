"""Training of the audio-visual sync model (`synctalk sync-train`, and preprocess on the subject's own clip).

Objective: symmetric InfoNCE on cosine similarities. Each video window's candidates are the batch's aligned
audio windows plus one audio window per item shifted by `min_offset`..`max_offset` frames (off-sync pairs of the
same clip); candidates of the same clip closer than `min_offset` frames to the video window (other than its own
aligned window) are masked out, because they are neither clearly in nor out of sync.

Runs on the shared step loop (synctalk.train.loop). Resumable: the checkpoint holds the model, optimizer,
scheduler, step, elapsed time and every RNG state; running again with the same output continues where it stopped
(Ctrl-C writes a checkpoint first). TensorBoard: ``sync/loss``, ``sync/accuracy``, ``sync/cos_pos``,
``sync/cos_shifted``, ``sync/temperature``, ``sync/lr_*`` and ``held_out/<clip>/*``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from synctalk.audio.sync_data import PairSampler, SyncClip
from synctalk.audio.sync_model import CHECKPOINT_FORMAT, SyncModel, SyncModelConfig
from synctalk.config import SyncTrainConfig
from synctalk.errors import UserInputError

log = logging.getLogger("synctalk.audio")


@dataclass
class SyncTrainReport:
    checkpoint: Path
    steps: int
    seconds: float
    samples_per_s: float
    loss: float
    accuracy: float
    history: list[dict] = field(default_factory=list)   # held-out checks: step, offset, lse_d, lse_c


def contrastive_loss(model: SyncModel, batch: dict[str, torch.Tensor], min_offset: int
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric InfoNCE (see module docstring). Returns the loss and batch statistics (0-d tensors on the batch's
    device: reading them waits for the device, so the caller decides when)."""
    video_emb = model.embed_visual(batch["video"])                                          # [B, 512]
    audio_emb = model.embed_audio(torch.cat([batch["audio"], batch["negative_audio"]]))     # [2B, 512]
    n = len(video_emb)
    cosine = video_emb @ audio_emb.T                                                        # [B, 2B]
    clip_time = batch["clip_time"]
    clip = clip_time[:, 0]
    t_video = clip_time[:, 1]
    t_audio = torch.cat([t_video, t_video + batch["negative_offset"]])
    same_clip = clip[:, None] == torch.cat([clip, clip])[None, :]
    ambiguous = same_clip & ((t_video[:, None] - t_audio[None, :]).abs() < min_offset)
    target = torch.arange(n, device=cosine.device)
    ambiguous[target, target] = False
    logits = (cosine * model.logit_scale.exp().clamp(max=100.0)).masked_fill(ambiguous, float("-inf"))
    loss_video = F.cross_entropy(logits, target)
    loss_audio = F.cross_entropy(logits[:, :n].T, target)
    with torch.no_grad():
        accuracy = (logits.argmax(1) == target).float().mean()
        positive = cosine.diagonal().mean()
        hard = cosine[target, target + n].mean()
    return 0.5 * (loss_video + loss_audio), {"accuracy": accuracy, "cos_pos": positive, "cos_shifted": hard}


def _lr_factor(step: int, max_steps: int, warmup: int = 200) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def train_sync_model(clips: list[SyncClip], out: str | Path, cfg: SyncTrainConfig | None = None,
                     held_out: list[SyncClip] | None = None, device: str | torch.device = "cpu",
                     budget_minutes: float | None = None, seed: int = 0, progress: bool = True,
                     log_dir: str | Path | None = None, init: str | Path | None = None,
                     tag: str | None = None) -> SyncTrainReport:
    """Train (or resume training) a sync model on `clips` and write it to `out` (atomically, periodically).

    Args:
        clips: training clips; windows are drawn from each clip's `centres`.
        held_out: clips scored every `cfg.eval_every` steps (offset, LSE-D/C) for TensorBoard and the report.
        budget_minutes: overrides `cfg.budget_minutes` (total over resumed runs; 0 = none).
        log_dir: TensorBoard folder (default: `<out>.tb/` beside the checkpoint).
        init: start from these weights (fine-tuning) instead of random ones; ignored when resuming.
        tag: identifies the training inputs; an existing checkpoint with another tag is replaced, not resumed.
    """
    from torch.utils.tensorboard import SummaryWriter

    from synctalk.audio.sync_model import load_sync_model, save_sync_model
    from synctalk.train.loop import LoopConfig, StepLoop

    cfg = cfg or SyncTrainConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget_s = 60.0 * (cfg.budget_minutes if budget_minutes is None else budget_minutes)
    device = torch.device(device)
    torch.manual_seed(seed)
    sampler = PairSampler(clips, cfg.batch_size, cfg.min_offset, cfg.max_offset, seed=seed)
    state = _read_resume_state(out, tag)
    if state is not None:
        model = SyncModel(SyncModelConfig(**state["config"]))
        model.load_state_dict(state["state_dict"])
    elif init is not None:
        source = load_sync_model(init)
        model = SyncModel(source.config if source.has_visual else SyncModelConfig(1.0, cfg.width))
        model.load_state_dict(source.state_dict(), strict=False)  # a Wav2Lip file brings the audio tower only
        log.info("sync model initialised from %s", init)
    else:
        model = SyncModel(SyncModelConfig(cfg.width, cfg.width))
    model.to(device).train()
    tower_params = [p for n, p in model.named_parameters() if n != "logit_scale"]
    optimizer = torch.optim.AdamW([{"name": "towers", "params": tower_params, "weight_decay": cfg.weight_decay},
                                   {"name": "temperature", "params": [model.logit_scale], "weight_decay": 0.0}],
                                  lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg.max_steps))
    history: list[dict] = []
    start_step = state["train"]["step"] if state is not None else 0
    writer = SummaryWriter(str(log_dir or out.with_suffix(".tb")), purge_step=start_step)
    last: dict[str, torch.Tensor] = {}

    def save(finished: bool) -> None:
        train = loop.state_dict()
        save_sync_model(model, out, finished=finished, clips=[c.name for c in clips], tag=tag, train={
            "step": loop.step, "elapsed_s": loop.elapsed, "history": history, "config": asdict(cfg),
            "optimizer": train["optimizer"], "scheduler": train["scheduler"], "sampler_rng": sampler.state(),
            "torch_rng": torch.get_rng_state()})  # plain tensors: the file loads with weights_only

    loop = StepLoop("sync", model, optimizer, scheduler,
                    LoopConfig(steps=cfg.max_steps, budget_s=budget_s, log_every=25,
                               checkpoint_every_s=cfg.checkpoint_every_s, eval_every=cfg.eval_every if held_out else 0,
                               hint=f"Lower sync.lr (now {cfg.lr})."),
                    save=lambda metric: save(False), writer=writer, progress=progress, where=str(out))
    if state is not None:
        train = state["train"]
        loop.load({"model": state["state_dict"], "optimizer": train["optimizer"], "scheduler": train["scheduler"],
                   "step": train["step"], "elapsed_s": train["elapsed_s"]})
        history = list(train["history"])
        sampler.set_state(train["sampler_rng"])
        torch.set_rng_state(train["torch_rng"])
        log.info("resuming sync training from step %d (%.0f s done)", loop.step, loop.elapsed)

    def step_fn(step: int):
        batch = {k: v.to(device, non_blocking=True) for k, v in sampler.batch().items()}
        loss, stats = contrastive_loss(model, batch, cfg.min_offset)
        last.update(loss=loss.detach(), **stats)
        return {"loss": loss}, {**stats, "temperature": model.logit_scale.detach().exp()}

    def evaluate(step: int) -> None:
        history.append(_evaluate(model, held_out, step, writer))
        model.train()

    run_start = time.perf_counter()
    try:
        loop.run(step_fn, evaluate=evaluate if held_out else None)
    except KeyboardInterrupt:
        log.warning("interrupted: checkpoint saved at step %d in %s; run the same command again to resume",
                    loop.step, out)
        raise
    finally:
        writer.close()
    save(True)
    seconds = time.perf_counter() - run_start
    final = {key: float(value) for key, value in last.items()} or {"loss": float("nan"), "accuracy": float("nan")}
    return SyncTrainReport(out, loop.step, loop.elapsed,
                           (loop.step - start_step) * cfg.batch_size / max(seconds, 1e-9), final["loss"],
                           final["accuracy"], history)


def _evaluate(model: SyncModel, clips: list[SyncClip], step: int, writer) -> dict:
    from synctalk.audio.score import score_clip

    entry: dict = {"step": step}
    for clip in clips:
        score = score_clip(model, clip)
        entry[clip.name] = {"offset": score.offset, "lse_d": score.lse_d, "lse_c": score.lse_c}
        writer.add_scalar(f"held_out/{clip.name}/offset", score.offset, step)
        writer.add_scalar(f"held_out/{clip.name}/lse_d", score.lse_d, step)
        writer.add_scalar(f"held_out/{clip.name}/lse_c", score.lse_c, step)
    log.info("step %d held-out: %s", step, entry)
    return entry


def _read_resume_state(out: Path, tag: str | None) -> dict | None:
    """The checkpoint's full state when `out` is a run of ours on the same inputs to continue, else None."""
    if not out.is_file():
        return None
    try:
        data = torch.load(out, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise UserInputError(f"{out}: exists but is not a readable checkpoint ({exc}); delete it or choose "
                             "another output") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or "train" not in data:
        raise UserInputError(f"{out}: exists and is not a synctalk sync-train checkpoint; choose another output")
    if data.get("tag") != tag:
        log.info("%s was trained on other inputs; training a new model", out)
        return None
    return data
