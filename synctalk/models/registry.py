"""Head representations by name (``model.head``) and the models of a workspace built from a config.

    head, torso = build_models(cfg, spec, device)     # cfg: SyncTalkConfig; spec: HeadSpec of the subject

A new representation subclasses :class:`synctalk.models.base.HeadRepresentation`, gets its config section in
``synctalk.config.schema.ModelConfig`` (named like the representation) and one line in :data:`HEADS`.
"""

from __future__ import annotations

import importlib

from synctalk.errors import ConfigError

__all__ = ["EXPRESSION_PRESETS", "HEADS", "build_head", "build_models", "expression_names", "head_class",
           "subject_spec"]

HEADS: dict[str, str] = {
    "nerf": "synctalk.models.head:HeadModel",
    "gaussian": "synctalk.models.gaussian:GaussianHead",
}
"""``model.head`` value → "module:class" (imported on use, so listing heads costs nothing)."""

EXPRESSION_PRESETS = {"upper7": None, "blink2": ("eyeBlinkLeft", "eyeBlinkRight"), "none": ()}


def expression_names(spec: str) -> tuple[str, ...]:
    """``train.expression`` → blendshape names: a preset (upper7, blink2, none) or comma-separated names."""
    from synctalk.models.head import DEFAULT_EXPRESSION_NAMES

    if spec in EXPRESSION_PRESETS:
        preset = EXPRESSION_PRESETS[spec]
        return DEFAULT_EXPRESSION_NAMES if preset is None else preset
    return tuple(name.strip() for name in spec.split(",") if name.strip())


def head_class(name: str) -> type:
    """The class registered as ``name``; a ConfigError lists the registered names otherwise."""
    if name not in HEADS:
        raise ConfigError(f"unknown head representation model.head={name!r}; registered: {', '.join(sorted(HEADS))}")
    module, _, attribute = HEADS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_head(cfg, spec):
    """The head ``cfg.model.head`` names, from its config section ``cfg.model.<name>`` and a HeadSpec."""
    name = cfg.model.head
    return head_class(name).from_config(getattr(cfg.model, name), spec)


def subject_spec(cfg, audio_feature_shape: tuple[int, ...], n_frames: int, box=None):
    """The :class:`HeadSpec` of a subject under a config (expression input and mouth head from ``cfg.train``)."""
    from synctalk.models.base import HeadSpec
    from synctalk.models.head import MOUTH_BLENDSHAPE_NAMES

    extra = {} if box is None else {"box": tuple(float(v) for v in box)}
    return HeadSpec(audio_feature_shape=tuple(audio_feature_shape), n_frames=int(n_frames),
                    expression_names=expression_names(cfg.train.expression),
                    mouth_names=MOUTH_BLENDSHAPE_NAMES if cfg.train.mouth_weight > 0 else (), **extra)


def build_models(cfg, spec, device):
    """The head (``model.head``) and the torso model of a workspace, on ``device``; also how render rebuilds them
    from a checkpoint (same config, same spec)."""
    from synctalk.models.torso import TorsoConfig, TorsoModel

    head = build_head(cfg, spec).to(device)
    torso = TorsoModel(TorsoConfig(), n_frames=spec.n_frames).to(device)
    return head, torso
