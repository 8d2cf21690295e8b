"""CLI: command registry, exit codes, error messages; a cheap `import synctalk`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synctalk.cli import main as cli_main


def run(argv, capsys):
    code = cli_main.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "assets", "inspect"):
        assert command in text


def test_usage_errors_exit_2(capsys):
    for argv in (["nonsense"], ["demo", "--no-such-flag"], ["demo", "--device", "tpu"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli_main.main(argv)
        assert exit_info.value.code == 2


def test_config_errors_exit_2_with_suggestion(capsys, tmp_path):
    code, _, err = run(["demo", "-o", str(tmp_path), "demo.secnds=2"], capsys)
    assert code == 2 and "did you mean 'demo.seconds'?" in err
    code, _, err = run(["demo", "-o", str(tmp_path), "no-equals"], capsys)
    assert code == 2 and "key=value" in err
    assert not (tmp_path / "sample.mp4").exists()


def test_inspect(make_subject, capsys, tmp_path):
    root = make_subject()
    code, out, _ = run(["inspect", str(root), "--require", "train"], capsys)
    assert code == 0 and "12 frames" in out and "splits          done" in out
    (root / "poses.npy").unlink()
    code, _, err = run(["inspect", str(root)], capsys)
    assert code == 2 and "poses.npy" in err
    code, _, err = run(["inspect", str(tmp_path / "missing")], capsys)
    assert code == 2 and "subject directory not found" in err
    code, _, err = run(["inspect", str(root), "--require", "frmaes"], capsys)
    assert code == 2 and "unknown step(s) frmaes" in err


def test_assets_commands(capsys, monkeypatch, tmp_path):
    code, out, _ = run(["assets", "list"], capsys)
    assert code == 0 and "face_landmarker" in out
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path))
    monkeypatch.setenv("SYNCTALK_OFFLINE", "1")
    code, out, _ = run(["assets", "path", "face_landmarker"], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "face_landmarker.task")
    code, _, err = run(["assets", "fetch", "face_landmarker"], capsys)
    assert code == 1 and "put it at" in err and "face_landmarker.task" in err
    code, _, err = run(["assets", "fetch", "nope"], capsys)
    assert code == 2 and "unknown asset" in err


def test_internal_error_exit_1_without_traceback(capsys, monkeypatch):
    import synctalk.cli.demo as demo_cmd

    def explode(args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(demo_cmd, "run", explode)
    code, _, err = run(["demo"], capsys)
    assert code == 1 and "internal error: RuntimeError: kaboom" in err and "Traceback" not in err


def test_import_is_cheap():
    """Importing the package and building the CLI parser loads no heavy library."""
    code = ("import sys, synctalk, synctalk.cli.main as m; m.build_parser(); "
            "heavy = [n for n in ('torch', 'cv2', 'mediapipe', 'matplotlib') if n in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_console_script_version():
    proc = subprocess.run([sys.executable, "-m", "synctalk.cli.main", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("synctalk ")


def test_native_stderr_is_held_back_unless_the_block_fails():
    """Output written straight to file descriptor 2 (as TFLite does) is hidden on success, replayed on error."""
    code = ("import os, sys\n"
            "from synctalk.runtime import native_stderr_captured\n"
            "with native_stderr_captured():\n"
            "    os.write(2, b'noise-from-C\\n')\n"
            "try:\n"
            "    with native_stderr_captured():\n"
            "        os.write(2, b'diagnostic-from-C\\n')\n"
            "        raise ValueError('x')\n"
            "except ValueError:\n"
            "    pass\n"
            "os.write(2, b'after\\n')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stderr == "diagnostic-from-C\nafter\n"


def test_cuda_request_without_gpu_is_a_usage_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error path is for CPU-only machines")
    code, _, err = run(["demo", "-o", str(tmp_path), "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda was requested but torch sees no CUDA GPU" in err


def test_preprocess_command(may_subject, capsys, tmp_path):
    """The CLI on an already processed subject: everything is up to date, the summary and config are written;
    bad input exits 2 with the reason."""
    import shutil

    from synctalk.config import SyncTalkConfig, load_config

    video, root, _ = may_subject
    copy = tmp_path / "subject"
    shutil.copytree(root, copy)
    quick = ["sync.width=0.125", "sync.batch_size=8", "sync.max_steps=6", "sync.eval_every=3"]  # as may_subject's
    code, out, _ = run(["preprocess", str(video), "-o", str(copy), "-q", "--seed", "5", *quick], capsys)
    assert code == 0 and "up to date" in out and f"{copy}: 125 frames @ 25 fps" in out
    assert load_config(SyncTalkConfig, copy / "config.yaml").seed == 5
    code, _, err = run(["preprocess", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and "missing.mp4: file not found" in err
    code, _, err = run(["preprocess", str(video), "-o", str(copy), "--force", "landmark"], capsys)
    assert code == 2 and "unknown step(s) landmark" in err
