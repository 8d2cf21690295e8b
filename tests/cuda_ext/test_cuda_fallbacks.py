"""The CUDA build finds conda's CUDA headers; a kernel that falls back to the reference on CUDA is loud and reported."""

from __future__ import annotations

import logging
import platform

import pytest

from cuda_ext import build


@pytest.fixture
def fresh(monkeypatch):
    """No remembered builds, backend choices or fallbacks; the cuda_ext log captured."""
    monkeypatch.setattr(build, "_RESULTS", {})
    monkeypatch.setattr(build, "_CHOSEN", set())
    monkeypatch.setattr(build, "_FALLBACKS", {})
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("synctalk.cuda_ext")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _fake_toolkit(prefix, header: bool = True, library: bool = True):
    tree = prefix / "targets" / build.CUDA_TARGETS.get(platform.machine(), f"{platform.machine()}-linux")
    (tree / "include").mkdir(parents=True)
    (tree / "lib").mkdir(parents=True)
    if header:
        (tree / "include" / "cuda_runtime_api.h").write_text("#pragma once\n")
    if library:
        (tree / "lib" / "libcudart.so.13").write_text("")
    return tree


def test_conda_targets_include_and_lib_go_into_the_cuda_build(monkeypatch, tmp_path, fresh):
    from torch.utils import cpp_extension

    tree = _fake_toolkit(tmp_path / "conda")
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "conda"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert build.cuda_toolkit_dirs() == ([str(tree / "include")], [str(tree / "lib")])

    # the real load path, with the compiler replaced: what would cpp_extension.load be given?
    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: calls.append(kwargs) or object())
    monkeypatch.setattr(build, "_why_unavailable", lambda kind: None)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setenv("SYNCTALK_BUILD_DIR", str(tmp_path / "build"))
    module, status = build.load("hashgrid", "cuda")
    assert module is not None and status.startswith("built")
    (kwargs,) = calls
    assert kwargs["with_cuda"] and str(tree / "include") in kwargs["extra_include_paths"]
    assert str(build.ROOT / "hashgrid") in kwargs["extra_include_paths"]
    assert f"-L{tree / 'lib'}" in kwargs["extra_ldflags"]
    assert [p.rsplit("/", 1)[-1] for p in kwargs["sources"]] == ["hashgrid.cu", "bindings_cuda.cpp"]


def test_toolkit_dirs_only_where_the_files_are(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    _fake_toolkit(tmp_path / "conda", header=False, library=False)
    cuda_home = _fake_toolkit(tmp_path / "cuda")
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "conda"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path / "cuda"))
    assert build.cuda_toolkit_dirs() == ([str(cuda_home / "include")], [str(cuda_home / "lib")])
    monkeypatch.delenv("CONDA_PREFIX")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert build.cuda_toolkit_dirs() == ([], [])


def test_a_cuda_fallback_warns_once_and_is_in_the_summary(monkeypatch, fresh):
    reason = "no nvcc (install the CUDA toolkit matching torch.version.cuda or set CUDA_HOME)"
    monkeypatch.setattr(build, "load", lambda op, kind: (None, reason if kind == "cuda" else "no C++ compiler"))
    assert build.fallback_summary() is None and build.fallbacks() == []
    for _ in range(3):
        assert build.resolve_backend("trihash", "auto", "cuda") == ("torch", None)
    assert build.resolve_backend("hashgrid", "auto", "cuda") == ("torch", None)
    warnings = [r for r in fresh if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "trihash" in warnings[0].getMessage() and "much slower" in warnings[0].getMessage()
    assert [(f.op, f.reason) for f in build.fallbacks()] == [("trihash", reason), ("hashgrid", reason)]
    summary = build.fallback_summary()
    assert summary.count("\n") == 0 and "trihash, hashgrid: no nvcc" in summary
    assert "environment.yml" in summary and "python -m cuda_ext.build --kind cuda" in summary


def test_cpu_fallbacks_are_not_reported(monkeypatch, fresh):
    monkeypatch.setattr(build, "load", lambda op, kind: (None, "no C++ compiler (install g++ or set CXX)"))
    assert build.resolve_backend("trihash", "auto", "cpu") == ("torch", None)
    assert build.resolve_backend("march", "auto", "cpu") == ("torch", None)
    assert build.fallbacks() == [] and build.fallback_summary() is None
    assert not [r for r in fresh if r.levelno >= logging.WARNING]


def test_a_failed_cuda_build_names_the_command_that_shows_the_errors(monkeypatch, fresh):
    monkeypatch.setattr(build, "load", lambda op, kind: (None, "build failed: cuda_runtime_api.h: No such file"))
    build.resolve_backend("composite", "auto", "cuda")
    (record,) = build.fallbacks()
    assert record.op == "composite" and "compiler errors" in record.fix
    assert "composite: build failed" in build.fallback_summary()


def test_per_call_fallbacks_on_cuda_are_reported(monkeypatch, fresh):
    from cuda_ext.hashgrid import ops

    monkeypatch.setattr(ops, "_FALLBACK_LOGGED", set())
    ops.log_fallback_once("hashgrid", "dtype torch.float64/torch.float64 (fast paths are float32)", "cpu")
    assert build.fallbacks() == []
    for _ in range(2):
        ops.log_fallback_once("hashgrid", "dtype torch.float64/torch.float64 (fast paths are float32)", "cuda")
    (record,) = build.fallbacks()
    assert record.reason.startswith("some calls: dtype") and "float32" in record.fix


def test_cli_prints_the_fallback_line(monkeypatch, fresh, capsys):
    from synctalk.cli.common import print_fallbacks

    print_fallbacks()
    assert capsys.readouterr().out == ""
    build.record_fallback("march", "no nvcc (install the CUDA toolkit)")
    print_fallbacks()
    out = capsys.readouterr().out
    assert out.startswith("slow path:") and "march: no nvcc" in out and out.count("\n") == 1
