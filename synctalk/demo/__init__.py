"""`synctalk demo`: the whole pipeline on a built-in, redistributable sample."""

from synctalk.demo.pipeline import DemoReport, run_demo
from synctalk.demo.sample import SampleClip, make_sample_clip, write_sample_clip

__all__ = ["DemoReport", "SampleClip", "make_sample_clip", "run_demo", "write_sample_clip"]
