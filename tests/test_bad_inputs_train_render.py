"""Bad inputs to train / render / stream / demo and the numeric flags of every command (issue 21), tried as a new
user would: each case exits with the documented code, a message that names the problem and the fix, and leaves
every file that was there before unchanged (checksums before and after)."""

from __future__ import annotations

import builtins
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from conftest import speech_like

from synctalk.cli import main as cli_main


def run(argv, capsys):
    code = cli_main.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def checksums(*roots: Path) -> dict[str, str]:
    """Path → sha256 of every file under ``roots`` (files or folders)."""
    sums = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder no file can be created in: read-only permissions, or (as root, who ignores them) /sys/kernel."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    candidates = [folder, Path("/sys/kernel")]
    try:
        for candidate in candidates:
            try:
                fd, name = tempfile.mkstemp(dir=candidate)
            except OSError:
                yield candidate
                return
            os.close(fd)
            os.unlink(name)
        pytest.skip("no folder here refuses writes (root on a system without a read-only /sys)")
    finally:
        folder.chmod(0o700)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    from synctalk.io.media import write_wav

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    write_wav(path, speech_like(0.4, seed=3))
    return path


# ------------------------------------------------------------------------------------------ full disk
def test_full_disk_at_a_checkpoint_names_the_path_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from synctalk.errors import DiskFullError
    from synctalk.train import checkpoint

    manager = checkpoint.CheckpointManager(tmp_path / "ckpt")
    manager.save(1, {"w": torch.ones(1000)})
    before = checksums(tmp_path)
    # every file the checkpoint module opens is /dev/full: the kernel answers ENOSPC like a full disk
    monkeypatch.setattr(checkpoint, "open", lambda path, mode="r": builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(DiskFullError) as info:
        manager.save(2, {"w": torch.zeros(1000)})
    message = str(info.value)
    assert f"disk full at {manager.path(2)}" in message and "MB free" in message and "Free some space" in message
    assert checksums(tmp_path) == before  # no partial file, the old checkpoint intact
    assert manager.load_latest()["step"] == 1
