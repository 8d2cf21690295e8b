"""The step loop of the small 2-D stages (mouth, portrait): optimiser steps, EMA, checkpoints, exact resume.

::

    loop = StageLoop(trainer, "mouth", model, optimizer, scheduler, extra={"size": 64})
    loop.run(steps, lambda rng: loss_of_a_batch(rng), scalar="mouth/l1")   # resumes where a checkpoint left off
    loop.finish()                                                         # EMA weights, eval mode
    loop.save(metric)

A checkpoint holds the model, optimiser, scheduler (when there is one), EMA, the stage's batch RNG
(``numpy.random.Generator``, passed to the loss), the global RNGs, the seconds trained and ``extra``. Ctrl-C saves
one and marks the stage interrupted in ``train_log.json``; running the stage again continues from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from synctalk.train.checkpoint import CheckpointManager, capture_rng, restore_rng

__all__ = ["StageLoop"]


class StageLoop:
    """Optimiser, EMA, batch RNG and checkpoints of one small stage of a :class:`synctalk.train.trainer.Trainer`."""

    def __init__(self, trainer, stage: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler=None, extra: dict | None = None):
        from synctalk.train.trainer import EMA

        self.trainer, self.stage, self.model = trainer, stage, model
        self.optimizer, self.scheduler, self.extra = optimizer, scheduler, extra or {}
        self.info = trainer.state["stages"].setdefault(stage, {"status": "pending"})
        self.ema = EMA(model, trainer.tcfg.ema_decay)
        self.rng = np.random.default_rng(trainer.cfg.seed)
        self.manager = CheckpointManager(trainer.workspace / "checkpoints" / stage, trainer.tcfg.keep_last)
        self.step, self.elapsed = 0, 0.0
        resume = self.manager.load_latest()
        if resume is not None:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            self.ema.load_state_dict(resume["ema"])
            self.rng.bit_generator.state = resume["sampler"]
            restore_rng(resume["rng"])
            self.step, self.elapsed = resume["step"], resume["elapsed_s"]

    def save(self, metric: float | None = None) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "ema": self.ema.state_dict(), "sampler": self.rng.bit_generator.state, "rng": capture_rng(),
                 "elapsed_s": self.elapsed, "stage": self.stage, **self.extra}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        self.manager.save(self.step, state, metric=metric)

    def run(self, steps: int, loss_fn: Callable[[np.random.Generator], torch.Tensor], scalar: str,
            budget_s: float = 0.0) -> None:
        """Step until ``steps`` (or ``budget_s`` seconds of training when > 0); ``loss_fn(rng)`` draws a batch and
        returns its loss, logged to TensorBoard as ``scalar``."""
        from tqdm import tqdm

        trainer, tcfg = self.trainer, self.trainer.tcfg
        self.info.update(status="running", steps=steps)
        trainer._write_log()
        bar = tqdm(total=steps, initial=self.step, desc=f"train {self.stage}", unit="step",
                   disable=None if trainer.progress else True)
        try:
            while self.step < steps and not (budget_s > 0 and self.elapsed >= budget_s):
                t0 = time.perf_counter()
                loss = loss_fn(self.rng)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.ema.update(self.model)
                self.step += 1
                self.elapsed += time.perf_counter() - t0
                bar.update(1)
                if self.step % tcfg.log_every == 0:
                    trainer.writer.add_scalar(scalar, loss.item(), self.step)
                if self.step % tcfg.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            self.save()
            self.info.update(status="interrupted", step=self.step)
            trainer._write_log()
            raise
        finally:
            bar.close()

    def finish(self) -> None:
        """Load the EMA weights into the model for validation and later use."""
        self.model.load_state_dict(self.ema.state_dict())
        self.model.eval()

    def done(self) -> None:
        self.info.update(status="done", step=self.step, seconds=round(self.elapsed, 1))
        self.trainer._write_log()
