"""StageLoop, the step loop of the small 2-D stages: exact resume after Ctrl-C, time budget, EMA weights."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import interrupt_on_call

from synctalk.train.loop import StageLoop


def fake_trainer(workspace):
    logged = []
    return SimpleNamespace(
        state={"stages": {}}, workspace=workspace, progress=False, cfg=SimpleNamespace(seed=3),
        tcfg=SimpleNamespace(ema_decay=0.9, keep_last=2, log_every=1, checkpoint_every=2),
        writer=SimpleNamespace(add_scalar=lambda name, value, step: logged.append((name, step))),
        _write_log=lambda: None, logged=logged)


def make_loop(trainer, with_scheduler: bool):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.9 ** s) if with_scheduler else None
    loop = StageLoop(trainer, "toy", model, optimizer, scheduler, extra={"size": 7})

    def loss(rng: np.random.Generator) -> torch.Tensor:
        x = torch.as_tensor(rng.standard_normal((4, 3)), dtype=torch.float32)
        return ((model(x) - torch.randn(4, 2)) ** 2).mean()  # the global RNG too: restored on resume
    return loop, loss


@pytest.mark.parametrize("with_scheduler", [True, False])
def test_interrupted_run_resumes_exactly(tmp_path, with_scheduler):
    straight, loss = make_loop(fake_trainer(tmp_path / "a"), with_scheduler)
    straight.run(6, loss, "toy/loss")

    trainer = fake_trainer(tmp_path / "b")
    loop, loss = make_loop(trainer, with_scheduler)
    with pytest.raises(KeyboardInterrupt):
        loop.run(6, interrupt_on_call(loss, call=4), "toy/loss")
    assert trainer.state["stages"]["toy"] == {"status": "interrupted", "steps": 6, "step": 3}
    resumed, loss = make_loop(trainer, with_scheduler)
    assert resumed.step == 3
    resumed.run(6, loss, "toy/loss")
    for name, value in straight.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[name], value, rtol=0, atol=0, msg=name)
    resumed.save()
    saved = resumed.manager.load_latest()
    assert saved["size"] == 7 and saved["stage"] == "toy" and ("scheduler" in saved) == with_scheduler


def test_budget_finish_and_done(tmp_path):
    trainer = fake_trainer(tmp_path)
    loop, loss = make_loop(trainer, True)
    loop.run(1000, loss, "toy/loss", budget_s=1e-9)
    assert loop.step == 1, "a spent budget stops after the step that spent it"
    assert trainer.logged == [("toy/loss", 1)]
    loop.finish()
    assert not loop.model.training
    for name, value in loop.ema.state_dict().items():
        torch.testing.assert_close(loop.model.state_dict()[name], value)
    loop.done()
    assert trainer.state["stages"]["toy"]["status"] == "done" and trainer.state["stages"]["toy"]["step"] == 1
