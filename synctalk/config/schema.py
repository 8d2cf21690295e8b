"""Config schemas. Each field's `help` is its documentation and the CLI help text.

Sections are added by the issues that implement them (model, train, render...). Defaults here are the
full-quality GPU profile; `configs/*.yaml` hold named recipes that override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def knob(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with documentation. Mutable defaults go through `default_factory`."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class PreprocessConfig:
    fps: float = knob(25.0, "Frame rate of the subject dataset (frames/s); the source video is resampled to it.")
    size: int = knob(512, "Side of the square face crop written to the subject dataset (pixels).")
    sample_rate_hz: int = knob(16000, "Audio sample rate of the subject's audio.wav (Hz, mono).")


@dataclass
class DataConfig:
    frame_cache: int = knob(64, "Decoded images kept in memory per image kind (LRU); memory does not grow "
                                "with video length.")


@dataclass
class DemoConfig:
    seconds: float = knob(6.0, "Length of the built-in sample clip (s).")
    size: int = knob(256, "Side of the built-in sample clip (pixels).")
    fps: float = knob(25.0, "Frame rate of the built-in sample clip (frames/s).")


@dataclass
class SyncTalkConfig:
    seed: int = knob(0, "Seed for every random number generator (python, numpy, torch).")
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "Compute device; auto picks cuda when available.")
    preprocess: PreprocessConfig = section(PreprocessConfig, "Video to subject dataset.")
    data: DataConfig = section(DataConfig, "Subject dataset loading.")
    demo: DemoConfig = section(DemoConfig, "The built-in sample used by `synctalk demo`.")
