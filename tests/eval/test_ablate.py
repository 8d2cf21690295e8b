"""synctalk.eval.ablate: variants from a folder, budget scaling, table/CSV/charts, resuming, skipped variants."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, build_subject, speech_like, tiny_train_config

from synctalk.config import SyncTalkConfig, TrainConfig, config_to_dict, load_config
from synctalk.errors import UserInputError
from synctalk.eval import ablate as A

TINY = {"device": "cpu", "train": {**config_to_dict(tiny_train_config(portrait_steps=0))["train"]}}


def write_variants(folder: Path, variants: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base").mkdir(exist_ok=True)
    (folder / "base" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    for name, body in variants.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"_base_": "base/tiny.yaml", **body}))
    return folder


# ------------------------------------------------------------------------------------------------ unit
@pytest.mark.parametrize("budget, expected", [
    (1.0, (4, 2, 0, 5, 10.0)),
    (0.5, (2, 1, 0, 2, 5.0)),      # 2.5 rounds to 2 (banker's rounding of round())
    (0.1, (1, 1, 0, 1, 1.0)),      # at least one step where the recipe has steps
    (3.0, (12, 6, 0, 15, 30.0)),
])
def test_scale_schedule(budget, expected):
    cfg = SyncTalkConfig(train=TrainConfig(head_steps=4, lips_steps=2, torso_steps=0, portrait_steps=5,
                                           budget_minutes=10.0))
    scaled = A.scale_schedule(cfg, budget)
    t = scaled.train
    assert (t.head_steps, t.lips_steps, t.torso_steps, t.portrait_steps, t.budget_minutes) == expected
    assert scaled.sync.max_steps == cfg.sync.max_steps
    assert cfg.train.head_steps == 4                      # the input is not changed
    assert A.scale_schedule(SyncTalkConfig(train=TrainConfig(budget_minutes=0.0)), 0.5).train.budget_minutes == 0


@pytest.mark.parametrize("budget", [0, -1, float("nan")])
def test_scale_schedule_rejects_bad_budget(budget):
    with pytest.raises(UserInputError, match="budget"):
        A.scale_schedule(SyncTalkConfig(), budget)


def test_shipped_variants_load_from_their_folder():
    paths = A.find_variants(REPO / "configs" / "ablations")
    names = [p.stem for p in paths]
    assert names == sorted(names)
    assert {"baseline", "audio_mel", "audio_hubert", "expression_off", "expression_blink2", "attention_off",
            "stabiliser_off", "portrait_on", "torso_off", "nerf"} <= set(names)
    cpu = load_config(SyncTalkConfig, REPO / "configs" / "cpu.yaml")
    variants = {p.stem: A.load_variant(p, [], 1.0) for p in paths}
    assert variants["baseline"].cfg == cpu and variants["baseline"].changes == {}
    assert variants["audio_mel"].changes == {"train.audio_backend": "mel"}
    assert variants["audio_hubert"].changes == {"train.audio_backend": "hubert"}
    assert variants["audio_phones"].changes == {"train.audio_backend": "phones"}
    assert variants["audio_phones_ave"].changes == {"train.audio_backend": "phones+ave"}
    assert variants["expression_off"].changes == {"train.expression": "none"}
    assert variants["expression_blink2"].changes == {"train.expression": "blink2"}
    assert variants["attention_off"].changes == {"train.attention_weight": 0.0}
    assert variants["stabiliser_off"].changes == {"train.poses": "raw"}
    assert variants["torso_off"].changes == {"train.torso_steps": 0}
    # the NeRF head's CPU recipe (the baseline is the Gaussian head's)
    assert variants["nerf"].cfg == load_config(SyncTalkConfig, REPO / "configs" / "nerf_cpu.yaml")
    assert variants["nerf"].cfg.model.head == "nerf" and variants["baseline"].cfg.model.head == "gaussian"
    assert variants["portrait_on"].portrait and variants["portrait_on"].cfg == cpu
    assert not variants["baseline"].portrait
    # overrides and budget apply to every variant, and to the base the changes are measured against
    half = A.load_variant(REPO / "configs" / "ablations" / "torso_off.yaml", ["train.rays=64"], 0.5)
    assert half.cfg.train.rays == 64 and half.cfg.train.head_steps == cpu.train.head_steps // 2
    assert half.cfg.train.budget_minutes == cpu.train.budget_minutes / 2
    assert half.changes == {"train.torso_steps": 0}


def test_variant_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist.*_base_"):
        A.find_variants(tmp_path / "nope")
    with pytest.raises(UserInputError, match=r"no \*\.yaml"):
        A.find_variants(tmp_path)
    folder = write_variants(tmp_path / "v", {"typo": {"train": {"hed_steps": 3}},
                                             "badeval": {"evaluate": {"portrait": "yes"}}})
    with pytest.raises(UserInputError, match=r"unknown key 'train.hed_steps'.*head_steps.*typo\.yaml"):
        A.load_variant(folder / "typo.yaml", [], 1.0)
    with pytest.raises(UserInputError, match="evaluate.portrait' must be true or false"):
        A.load_variant(folder / "badeval.yaml", [], 1.0)


def test_ablate_rejects_missing_subject_and_variants(tmp_path, capsys):
    from synctalk.cli.main import main

    folder = write_variants(tmp_path / "v", {"a": {}})
    with pytest.raises(UserInputError, match="subject directory .* does not exist"):
        A.ablate(tmp_path / "missing", folder, tmp_path / "out")
    assert main(["ablate", str(tmp_path / "missing"), "--variants", str(folder), "-o", str(tmp_path / "o")]) == 2
    subject = build_subject(tmp_path / "s", n_frames=4, size=(8, 8))
    assert main(["ablate", str(subject), "--variants", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert main(["ablate", str(subject), "--variants", str(folder), "-o", str(tmp_path / "o"), "--budget", "0"]) == 2
    assert not (tmp_path / "o" / "a").exists()                        # nothing trained on bad input


# ------------------------------------------------------------------------------------------------ end to end
def read_csv(path: Path) -> dict[str, dict]:
    with path.open() as handle:
        return {row["variant"]: row for row in csv.DictReader(handle)}


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.usefixtures("landmarker_model")
def test_ablate_end_to_end(tmp_path, monkeypatch, capsys):
    subject = build_subject(tmp_path / "s", n_frames=12, size=(24, 24), audio=speech_like(12 / 25))
    folder = write_variants(tmp_path / "variants", {
        "baseline": {},
        "expression_off": {"train": {"expression": "none", "head_steps": 6}},
        "needs_judge": {"train": {"audio_backend": "ave"}},       # no SUBJECT/sync.pt: fails in the trainer
        "typo": {"train": {"hed_steps": 3}},                       # unknown key
    })
    out = tmp_path / "out"
    entries = A.ablate(subject, folder, out, budget=0.5, max_frames=2, progress=False)

    by_name = {e["name"]: e for e in entries}
    assert [e["name"] for e in entries] == ["baseline", "expression_off", "needs_judge", "typo"]
    assert by_name["baseline"]["status"] == by_name["expression_off"]["status"] == "ok"
    assert by_name["needs_judge"]["status"] == "skipped" and "sync model" in by_name["needs_judge"]["reason"]
    assert by_name["typo"]["status"] == "skipped" and "hed_steps" in by_name["typo"]["reason"]
    assert by_name["expression_off"]["changes"] == {"train.expression": "none", "train.head_steps": 3}
    assert by_name["baseline"]["changes"] == {}

    # the budget reached the trainer: head 4 -> 2 steps, expression_off 6 -> 3
    for name, steps in (("baseline", 2), ("expression_off", 3)):
        log = json.loads((out / name / "workspace" / "train_log.json").read_text())
        assert log["stages"]["head"]["step"] == steps, name
        assert "portrait" not in log["stages"] or log["stages"]["portrait"].get("status") != "done"

    metrics = {name: json.loads((out / name / "report" / "metrics.json").read_text())
               for name in ("baseline", "expression_off")}
    assert metrics["baseline"]["frames"] == 2
    rows = read_csv(out / "ablation.csv")
    assert list(rows) == ["baseline", "expression_off", "needs_judge", "typo", "ground truth"]
    for name, result in metrics.items():
        render = result["rows"]["render"]
        for key in ("psnr", "ssim", "ms_ssim"):
            assert float(rows[name][key]) == render[key]
        assert float(rows[name]["render_fps"]) == result["speed"]["render_fps"]
        assert float(rows[name]["train_minutes"]) == result["speed"]["train_minutes"]
        assert rows[name]["lse_d"] == rows[name]["lse_c"] == ""          # no sync judge on the tiny subject
    assert rows["expression_off"]["changes"] == "train.head_steps=3, train.expression=none"
    assert rows["needs_judge"]["psnr"] == "" and "sync model" in rows["needs_judge"]["reason"]

    md = (out / "ablation.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "variant" and "PSNR ↑" in header and "LSE-D ↓" in header and header[-1] == "changes"
    cells = {row.strip("|").split("|")[0].strip(): [c.strip() for c in row.strip("|").split("|")] for row in table[1:]}
    assert list(cells) == ["baseline", "expression_off", "needs_judge (skipped)", "typo (skipped)", "ground truth"]
    psnr = header.index("PSNR ↑")
    assert cells["baseline"][psnr] == A._fmt(metrics["baseline"]["rows"]["render"]["psnr"])
    assert cells["baseline"][header.index("LSE-D ↓")] == "—"
    assert cells["ground truth"][header.index("LSE-C ↑")] == "—"
    assert cells["expression_off"][-1] == "train.head_steps=3, train.expression=none"
    assert "no sync judge" in md.split("Skipped metrics:")[1]                        # the reason under the table
    assert "needs_judge: " in md.split("Skipped variants:")[1] and "hed_steps" in md.split("Skipped variants:")[1]

    charts = sorted(p.name for p in (out / "charts").glob("*.png"))
    assert {"psnr.png", "ssim.png", "ms_ssim.png", "render_fps.png", "train_minutes.png"} <= set(charts)
    assert "lse_d.png" not in charts                                    # no values anywhere: no chart
    assert (out / "charts" / "psnr.png").stat().st_size > 1000

    # a second run trains and evaluates nothing: finished variants are up to date (the failed ones are retried)
    import synctalk.eval.evaluate
    import synctalk.train.trainer
    from synctalk.errors import SyncTalkError

    calls = []

    def boom(subject_or_ws, workspace_or_report, *args, **kwargs):
        calls.append(Path(workspace_or_report).parent.name)
        raise SyncTalkError("retried")

    monkeypatch.setattr(synctalk.train.trainer, "train", boom)
    monkeypatch.setattr(synctalk.eval.evaluate, "evaluate", boom)
    again = A.ablate(subject, folder, out, budget=0.5, max_frames=2, progress=False)
    assert calls == ["needs_judge"]
    assert [e["status"] for e in again] == ["ok", "ok", "skipped", "skipped"]
    assert again[0]["reused"] and again[1]["reused"]
    assert again[0]["metrics"] == metrics["baseline"]["rows"]["render"]
    assert read_csv(out / "ablation.csv")["baseline"]["psnr"] == rows["baseline"]["psnr"]

    # the CLI: same variants, budget and frames, so nothing new either
    from synctalk.cli.main import main

    calls.clear()
    assert main(["ablate", str(subject), "--variants", str(folder), "-o", str(out), "--budget", "0.5",
                 "--max-frames", "2", "-q"]) == 0
    assert calls == ["needs_judge"]
    capsys.readouterr()

    # another budget changes the configs: the variants are trained again
    calls.clear()
    A.ablate(subject, folder, out, budget=1.0, max_frames=2, progress=False)
    assert calls == ["baseline", "expression_off", "needs_judge"]


def _dotted(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        out += _dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={json.dumps(value)}"]
    return out


def test_shipped_phone_variants_run_under_ablate(tmp_path):
    """configs/ablations/audio_phones{,_ave}.yaml as shipped (on a tiny recipe): both train and are evaluated."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (a dependency: pip install -e .)")
    import shutil

    import torch

    from synctalk.audio.sync_model import SyncModel, SyncModelConfig, save_sync_model

    subject = build_subject(tmp_path / "s", n_frames=12, size=(24, 24), audio=speech_like(12 / 25))
    torch.manual_seed(0)
    save_sync_model(SyncModel(SyncModelConfig(0.25, 0.25)).eval(), tmp_path / "sync.pt")   # not the judge
    (tmp_path / "configs" / "ablations").mkdir(parents=True)
    for name in ("default.yaml", "cpu.yaml", "ablations/audio_phones.yaml", "ablations/audio_phones_ave.yaml"):
        shutil.copy(REPO / "configs" / name, tmp_path / "configs" / name)
    tiny = config_to_dict(tiny_train_config(portrait_steps=0))
    del tiny["train"]["audio_backend"]                                # the variants' own
    overrides = _dotted({"train": tiny["train"], "model": tiny["model"]})
    overrides.append(f"audio.sync_checkpoint={tmp_path}/sync.pt")
    entries = A.ablate(subject, tmp_path / "configs" / "ablations", tmp_path / "out", overrides=overrides,
                       max_frames=2, progress=False)
    assert {e["name"]: e["status"] for e in entries} == {"audio_phones": "ok", "audio_phones_ave": "ok"}
    for name, backend, width in (("audio_phones", "phones", 17), ("audio_phones_ave", "phones+ave", 17 + 512)):
        info = json.loads((tmp_path / "out" / name / "workspace" / "audio_features.json").read_text())
        assert info["backend"] == backend and info["shape"] == [width]
        assert json.loads((tmp_path / "out" / name / "report" / "metrics.json").read_text())["frames"] == 2
