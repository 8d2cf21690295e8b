"""Typed configuration: dataclass schemas, YAML files with `_base_` inheritance, key=value overrides.

Typical use::

    cfg = load_config(SyncTalkConfig, "configs/demo.yaml", ["preprocess.fps=30"])
    save_config(cfg, out_dir)        # writes out_dir/config.yaml
"""

from synctalk.config.loader import (
    CONFIG_FILENAME,
    config_to_dict,
    configs_dir,
    find_config,
    load_config,
    parse_overrides,
    save_config,
)
from synctalk.config.schema import (
    AudioConfig,
    DataConfig,
    DemoConfig,
    GaussianHeadConfig,
    ModelConfig,
    NerfHeadConfig,
    PreprocessConfig,
    SyncTalkConfig,
    SyncTrainConfig,
    TrainConfig,
)

__all__ = [
    "AudioConfig",
    "CONFIG_FILENAME",
    "DataConfig",
    "DemoConfig",
    "ModelConfig",
    "GaussianHeadConfig",
    "NerfHeadConfig",
    "PreprocessConfig",
    "SyncTalkConfig",
    "SyncTrainConfig",
    "TrainConfig",
    "config_to_dict",
    "configs_dir",
    "find_config",
    "load_config",
    "parse_overrides",
    "save_config",
]
