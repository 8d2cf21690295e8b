"""Project hygiene that CI enforces: lint clean, layout present, data never tracked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (pip install -e .[dev])")
    proc = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_layout_and_readme_commands():
    for path in ("synctalk", "preprocess", "cuda_ext", "configs", "tests", "scripts/test.sh", "scripts/demo.sh",
                 "docs/dataset.md", "environment.yml", "pyproject.toml", ".ci/run"):
        assert (REPO / path).exists(), f"{path} missing"
    readme = (REPO / "README.md").read_text()
    assert readme.index("scripts/demo.sh") < readme.index("synctalk preprocess")
    assert "scripts/test.sh" in (REPO / ".ci/run").read_text()


def test_no_media_or_weights_tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    banned = (".mp4", ".mov", ".wav", ".flac", ".mp3", ".task", ".tflite", ".pt", ".pth", ".ckpt", ".npy", ".npz")
    assert [f for f in files if f.endswith(banned) and not f.startswith("tests/fixtures/tiny")] == []
