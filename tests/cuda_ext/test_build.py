"""The build system: nothing compiles at import, failures warn once and are remembered, the cache key, nvcc check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cuda_ext import build

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_imports_compile_nothing(tmp_path):
    build_dir = tmp_path / "build"
    code = """
import sys
import cuda_ext
assert "torch" not in sys.modules, "import cuda_ext pulled in torch"
import cuda_ext.build, cuda_ext.trihash.ops, cuda_ext.hashgrid.ops, synctalk.field
from synctalk.field import TriPlaneHashEncoding, HashGridEncoding
compiled = [m for m in sys.modules if m.startswith("synctalk_")]
assert not compiled, compiled
assert "torch.utils.cpp_extension" not in sys.modules, "cpp_extension imported at import time"
print("ok")
"""
    proc = run_python(code, SYNCTALK_BUILD_DIR=str(build_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert not build_dir.exists(), "a build folder was created at import"


def test_available_ops_lists_ours():
    ops = build.available_ops()
    assert {"trihash", "hashgrid"} <= set(ops)


def test_sources_follow_the_convention():
    assert [p.name for p in build.sources("trihash", "cpu")] == ["trihash_cpu.cpp"]
    assert [p.name for p in build.sources("hashgrid", "cuda")] == ["hashgrid.cu", "bindings_cuda.cpp"]
    with pytest.raises(ValueError, match="unknown kind"):
        build.sources("trihash", "gpu")
    with pytest.raises(ValueError, match="unknown kind"):
        build.load("trihash", "gpu")


def test_build_root_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNCTALK_BUILD_DIR", raising=False)
    monkeypatch.setenv("SYNCTALK_HOME", str(tmp_path / "home"))
    assert build.build_root() == tmp_path / "home" / "build"
    monkeypatch.setenv("SYNCTALK_BUILD_DIR", str(tmp_path / "b"))
    assert build.build_root() == tmp_path / "b"


def test_build_dir_keys_on_op_kind_torch_cuda_arch():
    params = build.build_params("trihash", "cpu")
    folder = build.build_dir("trihash", "cpu", params).name
    assert folder.startswith("trihash-cpu-torch") and torch.__version__.split("+")[0] in folder
    assert f"cuda{torch.version.cuda or 'none'}" in folder
    assert params["sources"].keys() == {"trihash_cpu.cpp"}


def test_rebuild_message_names_what_changed():
    old = {"torch": "2.12", "cflags": ["-O3"], "sources": {"a.cpp": "1", "b.cu": "2"}}
    new = {"torch": "2.13", "cflags": ["-O3"], "sources": {"a.cpp": "1", "b.cu": "3"}}
    assert build._changes(old, new) == "torch, source b.cu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answer")
def test_cuda_unavailable_is_a_reason_not_a_warning():
    build._RESULTS.pop(("hashgrid", "cuda"), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module, reason = build.load("hashgrid", "cuda")
    assert module is None and "CUDA" in reason


def test_failed_build_warns_once_and_is_remembered(monkeypatch, tmp_path):
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    root = tmp_path / "ops"
    (root / "broken").mkdir(parents=True)
    # fails in the compiler's first pass, before any torch header is parsed, so the test takes seconds
    (root / "broken" / "broken_cpu.cpp").write_text("int main( { this is not C++ }\n")
    monkeypatch.setattr(build, "ROOT", root)
    monkeypatch.setattr(build, "_RESULTS", {})
    monkeypatch.setenv("SYNCTALK_BUILD_DIR", str(tmp_path / "build"))
    with pytest.warns(RuntimeWarning) as record:
        module, reason = build.load("broken", "cpu")
    assert module is None and reason.startswith("build failed")
    assert len(record) == 1 and "error" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call must neither rebuild nor warn
        assert build.load("broken", "cpu") == (None, reason)


def test_lock_left_by_a_killed_build_is_cleared(tmp_path):
    """torch's JIT waits forever on a `lock` file left by a killed build: load() must remove it and go on."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    root = tmp_path / "ops"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "broken_cpu.cpp").write_text("int main( { this is not C++ }\n")
    code = (f"from pathlib import Path; from cuda_ext import build; build.ROOT = Path({str(root)!r}); "
            "folder = build.build_dir('broken', 'cpu'); folder.mkdir(parents=True); (folder / 'lock').touch(); "
            "print(build.load('broken', 'cpu')[1]); print((folder / 'lock').exists())")
    result = run_python(code, SYNCTALK_BUILD_DIR=str(tmp_path / "build"))  # times out (fails) if it waits
    assert result.returncode == 0, result.stderr
    status, lock_left = result.stdout.split("\n")[:2]
    assert status.startswith("build failed") and lock_left == "False"
    assert "left by a build that was killed" in result.stderr


def test_missing_compiler_warns_once(monkeypatch):
    monkeypatch.setattr(build, "_RESULTS", {})
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as record:
        module, reason = build.load("trihash", "cpu")
        assert build.load("trihash", "cpu") == (None, reason)  # remembered: no second warning
    assert module is None and len(record) == 1


def test_missing_sources_is_a_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_RESULTS", {})
    assert build.load("no_such_op", "cpu") == (None, "no cpu sources in cuda_ext/no_such_op/")


def test_resolve_backend_rules():
    assert build.resolve_backend("trihash", "torch", "cpu") == ("torch", None)
    with pytest.raises(ValueError, match="unknown backend"):
        build.resolve_backend("trihash", "fast", "cpu")
    with pytest.raises(ValueError, match="needs cuda tensors"):
        build.resolve_backend("trihash", "cuda", "cpu")
    name, module = build.resolve_backend("trihash", "auto", "meta")
    assert (name, module) == ("torch", None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="would build the CUDA ops")
def test_cli_prints_a_table():
    proc = subprocess.run([sys.executable, "-m", "cuda_ext.build", "--ops", "trihash", "hashgrid", "--kind", "cuda"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["op", "kind", "ok", "status"]
    assert lines[1].split()[:3] == ["trihash", "cuda", "-"] and "torch has no CUDA" in lines[1]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_nvcc_compile_check_reports_errors(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text("__global__ void k(float* x) { x[0] = undefined_name; }\n")
    ok, message = build.nvcc_compile_check(bad)
    assert not ok and "undefined_name" in message
    good = tmp_path / "good.cu"
    good.write_text("__global__ void k(float* x) { x[threadIdx.x] *= 2.f; }\n")
    assert build.nvcc_compile_check(good) == (True, "")
