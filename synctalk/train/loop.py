"""The one step loop of every training in synctalk: the head, lips, torso, mouth and portrait stages and sync-train.

::

    loop = StepLoop("head", module, optimizer, scheduler, LoopConfig(steps=5000, ema_decay=0.99, log_every=50,
                    checkpoint_every=250), save=lambda metric: ..., writer=writer)
    loop.load(checkpoint)                       # exact resume: weights, optimiser, scheduler, EMA, step, time, RNGs
    loop.run(step_fn, after_step=..., evaluate=...)   # step_fn(step) -> {"l1": tensor, ...} (summed into the loss)

What it does for every caller, so no stage does it differently:

- optimiser step, scheduler step, EMA of the weights (``ema_decay`` > 0; one fused update, on the module's device);
- a non-finite loss stops the run with :class:`NonFiniteLoss` and the last good checkpoint intact. The check runs
  on the device and is read back only every ``finite_check_every`` steps and before each save, so a steady step
  does not wait for the GPU;
- checkpoints every ``checkpoint_every`` steps or ``checkpoint_every_s`` seconds, at evaluations (with their metric),
  at the end and on Ctrl-C (then ``KeyboardInterrupt`` is re-raised); the caller's ``save(metric)`` writes them
  atomically with :meth:`StepLoop.state_dict` and its own extras;
- TensorBoard scalars of every loss term and learning rate every ``log_every`` steps; progress;
- a time budget (``budget_s``) over all resumed runs.

This module is the engine layer: it imports nothing of the trainer, the models or the data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from synctalk.errors import SyncTalkError
from synctalk.train.checkpoint import capture_rng, restore_rng

__all__ = ["EMA", "LoopConfig", "NonFiniteLoss", "StepLoop"]

log = logging.getLogger("synctalk.train")


class NonFiniteLoss(SyncTalkError):
    """A loss became NaN or infinite; the message says where the last good checkpoint is and what to change."""


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers (integer buffers are copied).

    The shadow lives on the module's device; a loaded state moves there too (checkpoints are read to the CPU)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        state = module.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point and self.decay > 0]
        if floats:  # shadow += (1 - decay) * (value - shadow), fused over tensors
            torch._foreach_lerp_([self.shadow[k] for k in floats], [state[k].detach() for k in floats],
                                 1.0 - self.decay)
        chosen = set(floats)
        for key, value in state.items():
            if key not in chosen:
                self.shadow[key].copy_(value)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.to(self.shadow[k].device if k in self.shadow else v.device).clone()
                       for k, v in state.items()}


@dataclass
class LoopConfig:
    steps: int                        # train until this step
    budget_s: float = 0.0             # ... or this many seconds of training over all runs (0: none)
    ema_decay: float = 0.0            # 0: no EMA
    log_every: int = 50               # steps between TensorBoard scalars
    checkpoint_every: int = 0         # steps between checkpoints (0: off)
    checkpoint_every_s: float = 0.0   # seconds between checkpoints (0: off)
    eval_every: int = 0               # steps between evaluate() calls (0: only at the end)
    finite_check_every: int = 25      # steps between reading the non-finite flag back from the device
    hint: str = ""                    # what to change after a non-finite loss (e.g. "lower train.lr_grid")


StepOutput = dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | float]]
"""A step function returns its loss terms (summed into the loss), or (loss terms, extra scalars to log)."""


class StepLoop:
    """Optimiser steps of one training (see the module docstring)."""

    def __init__(self, name: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None,
                 config: LoopConfig | None = None, save: Callable[[float | None], None] | None = None,
                 writer=None, progress: bool = True, where: str = ""):
        self.name, self.module, self.optimizer, self.scheduler = name, module, optimizer, scheduler
        self.config = config or LoopConfig(steps=0)
        self.ema = EMA(module, self.config.ema_decay) if self.config.ema_decay > 0 else None
        self._save, self.writer, self.progress, self.where = save, writer, progress, where
        self.step, self.elapsed = 0, 0.0
        self.last_losses: dict[str, float] = {}
        self._bad = None  # device flag: some loss since the last check was not finite
        self._bad_at = -1

    # ------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Weights, optimiser, scheduler, EMA, step, seconds trained and the global RNG states."""
        state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "elapsed_s": self.elapsed, "rng": capture_rng()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` (loaded to any device: tensors follow the module)."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # torch casts the moments to the parameters' device
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if "rng" in state:
            restore_rng(state["rng"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_s"])

    @property
    def finished(self) -> bool:
        cfg = self.config
        return self.step >= cfg.steps or (cfg.budget_s > 0 and self.elapsed >= cfg.budget_s)

    def use_ema_weights(self) -> None:
        """Load the EMA weights into the module (for validation, later stages and rendering)."""
        if self.ema is not None:
            self.module.load_state_dict(self.ema.state_dict())

    # ------------------------------------------------------------------------------------------- run
    def save(self, metric: float | None = None) -> None:
        """Write a checkpoint through the caller's ``save`` (after making sure no loss went non-finite)."""
        self._check_finite()
        if self._save is not None:
            self._save(metric)

    def _check_finite(self) -> None:
        if self._bad is not None and bool(self._bad):
            raise NonFiniteLoss(f"{self.name}: a loss became non-finite between steps {self._bad_at} and "
                                f"{self.step} (last logged terms {self.last_losses}); the last good checkpoint "
                                f"is in {self.where or 'the output folder'}, untouched. {self.config.hint} "
                                "Run again to resume from it.".replace("  ", " "))
        self._bad, self._bad_at = None, self.step

    def run(self, step_fn: Callable[[int], StepOutput], after_step: Callable[[int], None] | None = None,
            evaluate: Callable[[int], float | None] | None = None) -> None:
        """Step until :attr:`finished`. ``step_fn(step)`` draws a batch and returns its loss terms; ``after_step(step)``
        runs after each optimiser step (``step`` = steps done); ``evaluate(step)`` every ``eval_every`` steps and at
        the end, returning a metric stored with that checkpoint (or None)."""
        from synctalk.progress import Progress

        cfg = self.config
        bar = Progress(f"train {self.name}", total=cfg.steps, initial=self.step, unit="step", enabled=self.progress)
        last_save = time.perf_counter()
        self._bad_at = self.step
        try:
            while not self.finished:
                t0 = time.perf_counter()
                output = step_fn(self.step)
                losses, extras = output if isinstance(output, tuple) else (output, {})
                loss = sum(losses.values())
                bad = ~torch.isfinite(loss.detach())
                self._bad = bad if self._bad is None else self._bad | bad
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.module)
                self.step += 1
                if after_step is not None:
                    after_step(self.step)
                self.elapsed += time.perf_counter() - t0
                bar.update(1)
                if self.step % max(cfg.finite_check_every, 1) == 0:
                    self._check_finite()
                if self.step % max(cfg.log_every, 1) == 0:
                    self._log(losses, extras, bar)
                metric = None
                if evaluate is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or self.finished):
                    metric = evaluate(self.step)
                due = (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or (
                    cfg.checkpoint_every_s and time.perf_counter() - last_save > cfg.checkpoint_every_s)
                if due or metric is not None:
                    self.save(metric)
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            bar.close("interrupted")
            self.save()
            log.warning("interrupted: %s saved at step %d; run the same command again to resume", self.name,
                        self.step)
            raise
        except BaseException:
            bar.close("failed")
            raise
        finally:
            bar.close()
        self._check_finite()

    def _log(self, losses: dict[str, torch.Tensor], extras: dict, bar) -> None:
        values = {name: float(value.detach()) for name, value in losses.items()}
        self.last_losses = {name: round(value, 6) for name, value in values.items()}
        bar.set_postfix(loss=f"{sum(values.values()):.4f}")  # shown on the bar and in the progress log lines
        if self.writer is None:
            return
        extras = {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in extras.items()}
        for name, value in {**values, **extras}.items():
            self.writer.add_scalar(f"{self.name}/{name}", value, self.step)
        for i, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(f"{self.name}/lr_{group.get('name', i)}", group["lr"], self.step)
