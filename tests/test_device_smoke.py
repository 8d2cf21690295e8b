"""The whole pipeline on each device (cpu always, cuda when torch sees a GPU), two steps of everything: every stage
of `train` with a Ctrl-C and a resume, a render, an evaluation, sync-train and sync-score. Catches tensors left on
the CPU next to CUDA ones, `.numpy()` on device tensors and the like; only the public entry points are used."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import (
    build_subject,
    interrupt_on_call,
    make_synthetic_clip,
    requires_cuda,
    speech_like,
    tiny_train_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
N_FRAMES, FPS, SIDE = 12, 25.0, 32


def _subject(root):
    """A 32 x 32 subject with mel features of speech-like audio, cut from a 48 x 48 original video (the portrait
    stage pastes back into it)."""
    from synctalk.data import SubjectWriter
    from synctalk.io.media import write_video

    rng = np.random.default_rng(2)
    originals = np.repeat(np.repeat(rng.integers(0, 255, (N_FRAMES, 12, 12, 3)), 4, 1), 4, 2).astype(np.uint8)
    video = write_video(root / "original.mp4", originals, FPS)
    source = {"path": str(video), "width": 48, "height": 48, "fps": FPS}
    subject = build_subject(root / "subject", N_FRAMES, (SIDE, SIDE), FPS, audio=speech_like(N_FRAMES / FPS),
                            frames=originals[:, 8:40, 8:40], source=source)
    SubjectWriter(subject).update_meta(crop={"x0": 8, "y0": 8, "side": SIDE, "source_width": 48,
                                             "source_height": 48})
    return subject


@pytest.mark.parametrize("head", ["nerf", "gaussian"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.usefixtures("landmarker_model")
def test_train_interrupt_resume_render_evaluate(device, head, tmp_path, monkeypatch, capsys):
    from synctalk.data.sampler import RaySampler
    from synctalk.eval.evaluate import EvaluateOptions, evaluate
    from synctalk.inference.video import RenderOptions, render_video
    from synctalk.io.media import write_wav
    from synctalk.runtime import configure_precision
    from synctalk.train.trainer import STAGES, train

    configure_precision(device, tf32=True)  # what every command does first
    subject, workspace = _subject(tmp_path), tmp_path / "ws"
    cfg = tiny_train_config(head, head_steps=2, lips_steps=2, torso_steps=2, mouth_generator_steps=2,
                            portrait_steps=2, checkpoint_every=1, eval_every=2)
    sample = RaySampler.sample
    monkeypatch.setattr(RaySampler, "sample", interrupt_on_call(sample, call=2))   # Ctrl-C at head step 2
    with pytest.raises(KeyboardInterrupt):
        train(subject, workspace, cfg, device=device, progress=False)
    head = workspace / "checkpoints" / "head"
    assert (head / "ckpt_0000001.pt").is_file() and not (head / "ckpt_0000002.pt").exists()
    monkeypatch.setattr(RaySampler, "sample", sample)
    report = train(subject, workspace, cfg, device=device, progress=False)          # resumes
    assert {stage: report.stages[stage]["status"] for stage in STAGES} == dict.fromkeys(STAGES, "done")
    assert (head / "ckpt_0000002.pt").is_file()

    write_wav(tmp_path / "speech.wav", speech_like(1 / FPS, seed=5))               # one frame of audio
    rendered = render_video(workspace, tmp_path / "speech.wav", tmp_path / "render.mp4",
                            RenderOptions(portrait=True), device=device, progress=False)
    assert rendered.n_frames == 1 and rendered.video.is_file()
    # the command: device and precision from the flags, the slow-path line exactly when a kernel fell back
    from cuda_ext.build import fallbacks
    from synctalk.cli.main import main

    assert main(["render", str(workspace), "--audio", str(tmp_path / "speech.wav"), "-o", str(tmp_path / "cli.mp4"),
                 "--device", device, "-q"]) == 0
    out = capsys.readouterr().out
    assert "video:" in out and ("slow path:" in out) == bool(fallbacks())

    result = evaluate(workspace, tmp_path / "report", EvaluateOptions(max_frames=1), device=device, progress=False)
    assert result["frames"] == 1 and math.isfinite(result["rows"]["render"]["psnr"])


@pytest.mark.parametrize("device", DEVICES)
def test_sync_train_and_score(device, tmp_path):
    from synctalk.audio.score import sync_score
    from synctalk.audio.sync_train import train_sync_model
    from synctalk.config import SyncTrainConfig

    clip = make_synthetic_clip(n_frames=120)
    train_part, held = clip.subset(0, 80, "train"), clip.subset(80, 120, "held")
    cfg = SyncTrainConfig(width=0.125, batch_size=8, max_steps=2, eval_every=1, min_offset=3, max_offset=6)
    report = train_sync_model([train_part], tmp_path / "sync.pt", cfg, held_out=[held], device=device,
                              progress=False)
    assert report.steps == 2 and math.isfinite(report.loss)
    assert [entry["step"] for entry in report.history] == [1, 2]                   # held-out scoring on the device
    score = sync_score(held, checkpoint=tmp_path / "sync.pt", max_offset=3, device=device)
    assert score.curve.shape == (7,) and math.isfinite(score.lse_d) and score.window_distances.dtype == np.float32
