"""Config loading: files, bases, overrides, type checks, unknown keys, round trip."""

from __future__ import annotations

import pytest

from synctalk.config import SyncTalkConfig, find_config, load_config, parse_overrides, save_config
from synctalk.config.loader import schema_keys
from synctalk.errors import ConfigError


def test_defaults_without_file():
    cfg = load_config(SyncTalkConfig)
    assert cfg == SyncTalkConfig()
    assert (cfg.seed, cfg.device, cfg.preprocess.fps, cfg.preprocess.size) == (0, "auto", 25.0, 512)


def test_recipe_chain_demo_cpu_default():
    cfg = load_config(SyncTalkConfig, "demo")
    assert cfg.device == "cpu"            # from cpu.yaml
    assert cfg.preprocess.size == 256     # cpu.yaml overrides default.yaml's 512
    assert cfg.preprocess.sample_rate_hz == 16000  # default.yaml
    assert cfg.demo.seconds == 6.0
    assert cfg.model.head == "gaussian" and cfg.model.gaussian.count == 6000    # demo.yaml over cpu.yaml
    nerf = load_config(SyncTalkConfig, "nerf_cpu")
    assert nerf.model.head == "nerf" and nerf.preprocess.size == 256 and nerf.train.mouth_generator_steps == 1500


def test_overrides_parse_yaml_values_and_win_over_file():
    cfg = load_config(SyncTalkConfig, "demo", ["preprocess.fps=30", "seed=7", "device=cuda"])
    assert cfg.preprocess.fps == 30.0 and isinstance(cfg.preprocess.fps, float)
    assert cfg.seed == 7 and cfg.device == "cuda"
    # YAML 1.1 reads 1e-2 (no dot) as a string; a float knob still takes it
    assert load_config(SyncTalkConfig, None, ["train.lr_mlp=1e-2"]).train.lr_mlp == 0.01
    assert parse_overrides(["a.b=[1, 2]", "c=true", "d=", "e=x=y"]) == {"a.b": [1, 2], "c": True, "d": "",
                                                                          "e": "x=y"}


@pytest.mark.parametrize("override, message", [
    ("preprocess.fsp=30", "unknown key 'preprocess.fsp' (did you mean 'preprocess.fps'?)"),
    ("sead=1", "unknown key 'sead' (did you mean 'seed'?)"),
    ("preprocess.fps.x=1", "unknown key 'preprocess.fps.x'"),
    ("device=cdua", "'device' must be one of auto, cpu, cuda; got 'cdua' (did you mean 'cuda'?)"),
    ("seed=1.5", "'seed' must be an integer, got 1.5"),
    ("seed=abc", "'seed' must be an integer"),
    ("preprocess.fps=fast", "'preprocess.fps' must be a number"),
    ("preprocess=3", "'preprocess' is a section"),
    ("no_equals_sign", "is not of the form key=value"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(SyncTalkConfig, None, [override])
    assert message in str(err.value)


def test_unknown_key_in_file_names_file_and_suggestion(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preprocess:\n  szie: 256\n")
    with pytest.raises(ConfigError) as err:
        load_config(SyncTalkConfig, path)
    assert "unknown key 'preprocess.szie' (did you mean 'preprocess.size'?)" in str(err.value)
    assert str(path) in str(err.value)


def test_base_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(SyncTalkConfig, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml' not found"):
        load_config(SyncTalkConfig, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(SyncTalkConfig, tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SyncTalkConfig, tmp_path / "e.yaml")


def test_unknown_recipe_lists_recipes():
    with pytest.raises(ConfigError) as err:
        find_config("dmeo")
    assert "did you mean 'demo'?" in str(err.value) and "recipes: cpu, default, demo" in str(err.value)


def test_save_then_load_round_trip(tmp_path):
    cfg = load_config(SyncTalkConfig, "demo", ["seed=3", "demo.seconds=2.5"])
    path = save_config(cfg, tmp_path)
    assert path.name == "config.yaml"
    assert load_config(SyncTalkConfig, path) == cfg


def test_schema_fields_all_documented():
    import dataclasses
    import typing

    def walk(schema):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            assert f.metadata.get("help"), f"{schema.__name__}.{f.name} has no help text"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name])

    walk(SyncTalkConfig)
    assert "preprocess.fps" in schema_keys(SyncTalkConfig)


def test_moved_keys_of_older_configs_still_load(tmp_path, caplog):
    """A workspace's config.yaml from before `model.nerf` (train.field_levels, ...) loads into the new keys."""
    from synctalk.config import SyncTalkConfig, load_config

    old = tmp_path / "config.yaml"
    old.write_text("train:\n  field_levels: 5\n  hidden: 24\n  head_steps: 7\n")
    with caplog.at_level("WARNING", logger="synctalk.config"):
        cfg = load_config(SyncTalkConfig, old, ["train.max_steps=99"])
    assert (cfg.model.nerf.levels, cfg.model.nerf.hidden, cfg.model.nerf.max_steps) == (5, 24, 99)
    assert cfg.train.head_steps == 7 and "train.field_levels' is now 'model.nerf.levels'" in caplog.text
    new = tmp_path / "new.yaml"
    new.write_text("model:\n  nerf:\n    levels: 6\ntrain:\n  field_levels: 5\n")  # the new key wins
    assert load_config(SyncTalkConfig, new).model.nerf.levels == 6
