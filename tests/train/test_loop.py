"""The one step loop (synctalk.train.loop) and a stage's run of it (synctalk.train.stage.StageRun): exact resume
after Ctrl-C, time budget, EMA weights, the deferred non-finite check, EMA state on the module's device."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import interrupt_on_call

from synctalk.train.loop import EMA, LoopConfig, NonFiniteLoss, StepLoop
from synctalk.train.stage import GeneratorState, StageRun, TrainLog


def fake_context(workspace: Path):
    logged = []
    workspace.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(
        workspace=workspace, progress=False, cfg=SimpleNamespace(seed=3), device=torch.device("cpu"),
        tcfg=SimpleNamespace(ema_decay=0.9, keep_last=2, log_every=1, checkpoint_every=2),
        writer=SimpleNamespace(add_scalar=lambda name, value, step: logged.append((name, step))),
        log=TrainLog(workspace / "train_log.json", {"stages": {}}), logged=logged)


def make_run(ctx, with_scheduler: bool, steps: int = 6, budget_s: float = 0.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.9 ** s) if with_scheduler else None
    rng = np.random.default_rng(ctx.cfg.seed)
    run = StageRun(ctx, "toy", model, optimizer, scheduler, steps=steps, budget_s=budget_s,
                   sampler=GeneratorState(rng), extra={"size": 7})
    run.resume()

    def losses(step: int) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(rng.standard_normal((4, 3)), dtype=torch.float32)
        return {"loss": ((model(x) - torch.randn(4, 2)) ** 2).mean()}  # the global RNG too: restored on resume
    return run, losses


@pytest.fixture(autouse=True)
def plain_config(monkeypatch):
    monkeypatch.setattr("synctalk.train.stage.asdict", lambda config: dict(vars(config)))


@pytest.mark.parametrize("with_scheduler", [True, False])
def test_interrupted_run_resumes_exactly(tmp_path, with_scheduler):
    straight, losses = make_run(fake_context(tmp_path / "a"), with_scheduler)
    straight.run(losses)

    ctx = fake_context(tmp_path / "b")
    run, losses = make_run(ctx, with_scheduler)
    with pytest.raises(KeyboardInterrupt):
        run.run(interrupt_on_call(losses, call=4))
    assert {k: ctx.log.state["stages"]["toy"][k] for k in ("status", "steps", "step")} == \
        {"status": "interrupted", "steps": 6, "step": 3}
    resumed, losses = make_run(ctx, with_scheduler)
    assert resumed.step == 3
    resumed.run(losses)
    for name, value in straight.loop.ema.state_dict().items():
        torch.testing.assert_close(resumed.loop.ema.state_dict()[name], value, rtol=0, atol=0, msg=name)
    resumed.save()
    saved = resumed.manager.load_latest()
    assert saved["size"] == 7 and saved["stage"] == "toy" and ("scheduler" in saved) == with_scheduler


def test_budget_finish_and_done(tmp_path):
    ctx = fake_context(tmp_path)
    run, losses = make_run(ctx, True, steps=1000, budget_s=1e-9)
    run.run(losses)
    assert run.step == 1, "a spent budget stops after the step that spent it"
    assert ("toy/loss", 1) in ctx.logged and ("toy/lr_0", 1) in ctx.logged
    run.finish()
    assert not run.module.training
    for name, value in run.loop.ema.state_dict().items():
        torch.testing.assert_close(run.module.state_dict()[name], value)
    run.done()
    assert ctx.log.state["stages"]["toy"]["status"] == "done" and ctx.log.state["stages"]["toy"]["step"] == 1


def test_a_non_finite_loss_is_caught_before_the_next_save_and_the_last_good_checkpoint_stays():
    model = torch.nn.Linear(2, 1)
    saved = []
    loop = StepLoop("toy", model, torch.optim.SGD(model.parameters(), lr=0.1),
                    config=LoopConfig(steps=20, checkpoint_every=5, finite_check_every=100, hint="Lower the lr."),
                    save=lambda metric: saved.append(loop.step), progress=False, where="/ws/ckpts")

    def losses(step: int) -> dict[str, torch.Tensor]:
        loss = model(torch.ones(1, 2)).pow(2).sum()
        return {"loss": loss * float("nan") if step == 7 else loss}

    with pytest.raises(NonFiniteLoss, match=r"between steps 5 and 10.*/ws/ckpts, untouched\. Lower the lr\."):
        loop.run(losses)
    assert saved == [5], "the checkpoint after the bad step was not written"


def test_the_non_finite_check_reads_the_flag_every_n_steps():
    model = torch.nn.Linear(2, 1)
    loop = StepLoop("toy", model, torch.optim.SGD(model.parameters(), lr=0.1),
                    config=LoopConfig(steps=50, finite_check_every=4), progress=False)
    with pytest.raises(NonFiniteLoss, match="between steps 0 and 4"):
        loop.run(lambda step: {"loss": model(torch.ones(1, 2)).sum() * (float("inf") if step == 1 else 1.0)})
    assert loop.step == 4


def test_ema_matches_the_formula_and_loads_onto_the_modules_device():
    model = torch.nn.Linear(2, 2)
    model.register_buffer("count", torch.tensor(3))
    ema = EMA(model, 0.75)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
        model.count.add_(2)
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["weight"], 0.75 * before["weight"] + 0.25 * model.weight)
    assert int(ema.state_dict()["count"]) == 5  # integer buffers are copied, not averaged
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_device = EMA(model.to(device), 0.5)
    on_device.load_state_dict({k: v.cpu() for k, v in ema.state_dict().items()})  # a checkpoint read to the CPU
    assert all(v.device.type == device for v in on_device.state_dict().values())
    on_device.update(model)


def test_progress_off_a_terminal_is_written_to_the_log_with_the_loss(caplog):
    """Under a log file (stderr is no terminal under pytest), the loop's progress is INFO lines: the start and the
    end with steps, rate and the last logged loss; a failure is named as such."""
    import logging

    caplog.set_level(logging.INFO, logger="synctalk.progress")
    model = torch.nn.Linear(2, 1)
    loop = StepLoop("toy", model, torch.optim.SGD(model.parameters(), lr=0.1),
                    config=LoopConfig(steps=6, log_every=2), progress=True)
    loop.run(lambda step: {"loss": model(torch.ones(1, 2)).pow(2).sum()})
    lines = [r.getMessage() for r in caplog.records if r.name == "synctalk.progress"]
    assert lines[0] == "train toy 0/6 steps (0.0%), starting"
    assert lines[-1].startswith("train toy 6/6 steps (100.0%), ") and ", done, loss " in lines[-1]
    assert "steps/s" in lines[-1]
    loop = StepLoop("bad", model, torch.optim.SGD(model.parameters(), lr=0.1),
                    config=LoopConfig(steps=6, finite_check_every=2), progress=True)
    with pytest.raises(NonFiniteLoss):
        loop.run(lambda step: {"loss": model(torch.ones(1, 2)).sum() * float("nan")})
    assert [r.getMessage() for r in caplog.records][-1].startswith("train bad 2/6 steps (33.3%)")
    assert [r.getMessage() for r in caplog.records][-1].endswith("failed")
