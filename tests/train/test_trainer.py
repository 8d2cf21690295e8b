"""`synctalk train` on a tiny synthetic subject: every stage runs, checkpoints, exact resume, NaN stop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import interrupt_on_call, tiny_train_config

from synctalk.config import SyncTalkConfig
from synctalk.errors import SyncTalkError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> SyncTalkConfig:
    return tiny_train_config(portrait_steps=0, **overrides)


@pytest.fixture
def subject(make_subject):
    return make_subject(n_frames=12, size=(24, 32))


def test_all_stages_run_and_leave_checkpoints(subject, tmp_path):
    from synctalk.data import SubjectWriter
    from synctalk.train.trainer import train

    # the body moves: each frame has its own torso track (shifts of up to a tenth of the image)
    tracks = np.tile(np.eye(2, 3, dtype=np.float32), (12, 1, 1))
    tracks[:, :, 2] = np.random.default_rng(0).uniform(-0.2, 0.2, (12, 2))
    SubjectWriter(subject).save_array("torso_track.npy", tracks)
    # two frames per step: per-ray frames through every stage, two lip patches per lips step
    report = train(subject, tmp_path / "ws", tiny_config(frames_per_batch=2), progress=False)
    assert [report.stages[s]["status"] for s in ("head", "lips", "torso")] == ["done"] * 3
    log = json.loads((tmp_path / "ws" / "train_log.json").read_text())
    assert log["stages"]["head"]["step"] == 4 and log["feature_shape"] == [16, 8]
    for stage in ("head", "lips", "torso"):
        folder = tmp_path / "ws" / "checkpoints" / stage
        assert (folder / "best.pt").is_file() and len(list(folder.glob("ckpt_*.pt"))) <= 2
    assert (tmp_path / "ws" / "config.yaml").is_file() and any((tmp_path / "ws" / "tb").iterdir())
    from synctalk.io.images import read_image

    sheet = read_image(tmp_path / "ws" / "val" / "torso_0000002.png")
    assert sheet.shape == (16, 16 * 6, 3)  # gt | render | error | audio att. | expression att. | opacity
    # the torso started from the training frames' mean torso, aligned by their tracks (the prior is a fixed buffer,
    # kept in checkpoints)
    from synctalk.data import SubjectDataset
    from synctalk.data.contract import TORSO_LABELS
    from synctalk.models.torso import TorsoModel, torso_prior, warp_to_canonical
    from synctalk.train.checkpoint import CheckpointManager

    ds = SubjectDataset(subject)
    expected = TorsoModel()
    expected.set_prior(*torso_prior(((warp_to_canonical(ds.gt(f), tracks[f]),
                                      warp_to_canonical(ds.parsing(f), tracks[f], nearest=True))
                                     for f in ds.split("train")), TORSO_LABELS))
    saved = CheckpointManager(tmp_path / "ws" / "checkpoints" / "torso").load_latest()["model"]["prior_logits"]
    torch.testing.assert_close(saved, expected.prior_logits)
    assert saved.abs().max() > 1  # not the neutral prior
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "ws" / "tb"))
    events.Reload()
    assert any(tag.startswith("torso/prior") for tag in events.Tags()["images"])  # the prior as a picture
    # finished stages are skipped
    again = train(subject, tmp_path / "ws", tiny_config(frames_per_batch=2), progress=False)
    assert again.stages["head"]["seconds"] == report.stages["head"]["seconds"]


def test_interrupted_head_stage_resumes_exactly(subject, tmp_path, monkeypatch):
    from synctalk.data.sampler import RaySampler
    from synctalk.train.trainer import train

    cfg = tiny_config(lips_steps=0, torso_steps=0, checkpoint_every=1, frames_per_batch=3, mouth_fraction=0.2)
    train(subject, tmp_path / "straight", cfg, progress=False, stages=("head",))
    original = RaySampler.sample
    monkeypatch.setattr(RaySampler, "sample", interrupt_on_call(original))
    with pytest.raises(KeyboardInterrupt):
        train(subject, tmp_path / "resumed", cfg, progress=False, stages=("head",))
    monkeypatch.setattr(RaySampler, "sample", original)
    train(subject, tmp_path / "resumed", cfg, progress=False, stages=("head",))
    a = torch.load(tmp_path / "straight" / "checkpoints" / "head" / "ckpt_0000004.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "head" / "ckpt_0000004.pt", weights_only=False)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, msg=key)


def test_non_finite_loss_stops_with_a_clear_message(subject, tmp_path, monkeypatch):
    from synctalk.train import stages, trainer

    original = stages.HeadStage.losses

    def poisoned(self, batch, step):
        losses = original(self, batch, step)
        if step == 2:
            losses["photometric"] = losses["photometric"] * float("nan")
        return losses

    monkeypatch.setattr(stages.HeadStage, "losses", poisoned)
    with pytest.raises(SyncTalkError, match="head: a loss became non-finite between steps 2 and 3.*lr_grid"):
        trainer.train(subject, tmp_path / "ws", tiny_config(checkpoint_every=1), progress=False, stages=("head",))
    assert (tmp_path / "ws" / "checkpoints" / "head" / "ckpt_0000002.pt").is_file()
    assert not (tmp_path / "ws" / "checkpoints" / "head" / "ckpt_0000003.pt").exists()


def test_time_budget_stops_a_stage_with_its_validation(subject, tmp_path):
    from synctalk.train.trainer import train

    report = train(subject, tmp_path / "ws", tiny_config(budget_minutes=1e-6), progress=False, stages=("head",))
    head = report.stages["head"]
    assert head["status"] == "done" and head["step"] == 1 and head["val_psnr"] > 0


def test_ablation_knobs_change_what_the_model_sees(tmp_path):
    """train.expression / poses / audio_backend / attention_weight: the inputs the ablations switch."""
    import numpy as np
    from conftest import build_subject, speech_like

    from synctalk.train.trainer import Trainer

    subject = build_subject(tmp_path / "s", n_frames=12, size=(24, 24), audio=speech_like(12 / 25))
    raw = np.tile(np.eye(4, dtype=np.float32), (12, 1, 1))
    raw[:, 0, 3] = 0.5
    np.save(subject / "poses_raw.npy", raw)
    cfg = tiny_config(lips_steps=0, torso_steps=0, expression="none", poses="raw", audio_backend="mel",
                      attention_weight=0.0)
    trainer = Trainer(subject, tmp_path / "ws", cfg, progress=False)
    assert trainer.head.config.field.expression_dim == 0 and trainer.data.expressions.shape == (12, 0)
    assert torch.allclose(trainer.data.poses[:, 0, 3], torch.full((12,), 0.5))
    assert trainer.data.features.shape == (12, 80, 16)   # mel computed into the workspace
    assert json.loads((tmp_path / "ws" / "audio_features.json").read_text())["backend"] == "mel"
    report = trainer.run(("head",))
    assert report.stages["head"]["status"] == "done" and np.isfinite(report.stages["head"]["val_psnr"])
    blink = Trainer(subject, tmp_path / "ws2", tiny_config(expression="blink2"), progress=False)
    assert blink.data.expressions.shape == (12, 2)
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")
    phones = Trainer(subject, tmp_path / "ws3", tiny_config(lips_steps=0, torso_steps=0, audio_backend="phones"),
                     progress=False)
    assert phones.data.features.shape == (12, 17)         # visemes + loudness + voicing, into the workspace
    assert phones.run(("head",)).stages["head"]["status"] == "done"


def test_redo_starts_a_stage_over(subject, tmp_path):
    from synctalk.train.trainer import train

    train(subject, tmp_path / "ws", tiny_config(), progress=False)
    again = train(subject, tmp_path / "ws", tiny_config(torso_steps=3), progress=False, redo=("torso",))
    assert again.stages["torso"]["step"] == 3 and again.stages["head"]["step"] == 4
    assert sorted(p.name for p in (tmp_path / "ws" / "checkpoints" / "torso").glob("ckpt_*.pt"))[-1] == \
        "ckpt_0000003.pt"


def test_mouth_head_learns_the_mouth_blendshapes_from_audio(subject, tmp_path):
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES
    from synctalk.train.stages import HeadStage
    from synctalk.train.trainer import Trainer

    trainer = Trainer(subject, tmp_path / "ws", tiny_config(mouth_weight=0.1, mouth_warmup_steps=100), progress=False)
    stage = HeadStage(trainer.context)
    frames = torch.as_tensor(trainer.data.train)
    assert trainer.data.mouth.shape == (12, len(MOUTH_BLENDSHAPE_NAMES))

    def mouth_loss() -> float:
        with torch.no_grad():
            return stage.mouth_loss(frames, trainer.head.encode_audio(trainer.data.features, frames)).item()

    before = mouth_loss()
    assert stage.start() > 0
    assert mouth_loss() < 0.5 * before
    from synctalk.data.sampler import RaySampler

    batch = RaySampler(trainer.ds, trainer.data.train, 32, frames_per_batch=2).sample()
    losses = stage.losses(batch, 0)
    assert "mouth" in losses and torch.isfinite(losses["mouth"])
    # off by default: no head, no loss
    plain = Trainer(subject, tmp_path / "plain", tiny_config(), progress=False)
    assert plain.head.mouth_head is None and "mouth" not in HeadStage(plain.context).losses(batch, 0)
    from synctalk.errors import ConfigError

    with pytest.raises(ConfigError, match="mouth_weight > 0"):
        Trainer(subject, tmp_path / "bad", tiny_config(audio_grad="mouth"), progress=False)


def test_audio_grad_mouth_keeps_the_photometric_loss_off_the_audio_net(subject, tmp_path):
    from synctalk.data.sampler import RaySampler
    from synctalk.train.stages import HeadStage
    from synctalk.train.trainer import Trainer

    for audio_grad, reaches in (("all", True), ("mouth", False)):
        trainer = Trainer(subject, tmp_path / audio_grad, tiny_config(mouth_weight=0.1, audio_grad=audio_grad,
                                                                      audio_noise=0.5), progress=False)
        batch = RaySampler(trainer.ds, trainer.data.train, 32, frames_per_batch=2).sample()
        HeadStage(trainer.context).losses(batch, 0)["photometric"].backward()
        grads = [p.grad.abs().sum() for p in trainer.head.audio_net.parameters() if p.grad is not None]
        assert (sum(grads) > 0) == reaches, audio_grad


def test_a_lips_stage_that_scores_lower_keeps_the_head_weights(subject, tmp_path, monkeypatch):
    """A stage must not make the model worse: lips weights that validate below the head's are not kept."""
    from synctalk.train.checkpoint import CheckpointManager
    from synctalk.train.stage import StageContext
    from synctalk.train.trainer import train

    scores = {"head": 30.0, "lips": 20.0}
    monkeypatch.setattr(StageContext, "validate", lambda self, stage, step, module, weights: scores[stage])
    report = train(subject, tmp_path / "ws", tiny_config(torso_steps=0), progress=False, stages=("head", "lips"))
    lips = report.stages["lips"]
    assert lips["kept"] == "head" and lips["val_psnr"] == 30.0 and lips["val_psnr_lips"] == 20.0
    assert "kept the head stage's weights" in " ".join(report.lines())
    head = CheckpointManager(tmp_path / "ws" / "checkpoints" / "head").load_latest()["model"]
    kept = CheckpointManager(tmp_path / "ws" / "checkpoints" / "lips").load_latest()
    for key, value in head.items():
        torch.testing.assert_close(kept["model"][key], value, msg=key)
        torch.testing.assert_close(kept["ema"][key], value, msg=key)
    # a lips stage that scores higher keeps its own weights
    scores["lips"] = 40.0
    again = train(subject, tmp_path / "ws2", tiny_config(torso_steps=0), progress=False, stages=("head", "lips"))
    assert "kept" not in again.stages["lips"] and again.stages["lips"]["val_psnr"] == 40.0


def test_the_head_box_is_measured_from_the_subject_and_kept(subject, tmp_path):
    """A new workspace measures the head's box, builds the model on it and keeps it: a rerun and a render rebuild
    the same box (and the occupancy grid keeps its cell size)."""
    from synctalk.inference.avatar import Avatar
    from synctalk.train.trainer import Trainer

    trainer = Trainer(subject, tmp_path / "ws", tiny_config(), progress=False)
    box = json.loads((tmp_path / "ws" / "train_log.json").read_text())["head_box"]
    assert trainer.head.grid.aabb.tolist() == pytest.approx(box)
    size = np.subtract(box[3:], box[:3])
    assert trainer.head.grid.resolution == tuple(int(np.ceil(16 * s / 2 - 1e-6)) for s in size)
    trainer.run(("head",))
    assert Trainer(subject, tmp_path / "ws", tiny_config(), progress=False).head.grid.aabb.tolist() == \
        pytest.approx(box)
    assert Avatar.load(tmp_path / "ws").head.grid.aabb.tolist() == pytest.approx(box)


def test_no_head_mask_of_a_real_clip_touches_the_training_box(may_subject, tmp_path):
    """The hair was cut flat where the old fixed box ended: the box a workspace trains with must hold every
    frame's head mask, at the head's depth too."""
    from synctalk.data import SubjectDataset
    from synctalk.data.bounds import box_clearance
    from synctalk.train.trainer import Trainer

    _, subject, _ = may_subject
    trainer = Trainer(subject, tmp_path / "ws", tiny_config(), progress=False)
    box = trainer.head.grid.aabb.tolist()
    ds = SubjectDataset(subject)
    clearance, at_head_depth = box_clearance(ds, box), box_clearance(ds, box, depth=0.0)
    print(f"May: box {np.round(box, 2).tolist()}, clearance min {clearance.min():.1f} px, at z = 0 "
          f"{at_head_depth.min():.1f} px")
    assert len(clearance) == len(ds) and (clearance > 0).all() and (at_head_depth > 0).all()


def test_workspaces_from_before_measured_boxes_keep_the_default_box(subject, tmp_path):
    from synctalk.train.trainer import Trainer

    Trainer(subject, tmp_path / "ws", tiny_config(), progress=False).run(("head",))
    log_path = tmp_path / "ws" / "train_log.json"
    log = json.loads(log_path.read_text())
    del log["head_box"]
    log_path.write_text(json.dumps(log))
    trainer = Trainer(subject, tmp_path / "ws", tiny_config(), progress=False)
    assert trainer.head.grid.aabb.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert trainer.head.grid.resolution == (16, 16, 16) and "head_box" not in json.loads(log_path.read_text())
