"""JIT builds of the kernel extensions: one extension per op and kind, cached on disk, failures remembered.

Convention (every op folder follows it):

    cuda_ext/<op>/*_cpu.cpp                    kind "cpu":  C++/OpenMP fast path with its own PYBIND11_MODULE
    cuda_ext/<op>/*.cu + bindings_cuda.cpp     kind "cuda": kernels + launchers, bindings in the .cpp

`load(op, kind)` returns `(module, "built in 31 s")`, `(module, "cached")` or `(None, reason)`. Nothing compiles at
import; the first `load` of an (op, kind) builds (a minute or so for a CPU op, a few minutes for CUDA), later
processes load the cached library. A failed build is reported as ONE warning with the first compiler errors, is
remembered for the rest of the process (not retried on every call), and callers fall back to the PyTorch reference.
On CUDA tensors such a fallback is slow: it is logged as a WARNING once per op and kept in `fallbacks()` /
`fallback_summary()`, which the CLI prints in its final summary.

Build directory: `$SYNCTALK_BUILD_DIR`, else `$SYNCTALK_HOME/build`, else `~/.cache/synctalk/build`, with one
sub-folder per op / kind / torch version / CUDA version / arch, so switching torch or GPU never loads a stale library.
Each folder keeps `build.json` (the build parameters and source hashes); when it differs from the current ones the
rebuild says what changed. Builds of one folder are serialised by an OS file lock, which dies with its process; a
`lock` file left by a killed build (torch waits on it forever) is removed under that lock.

Prebuild from the command line (prints a table):

    python -m cuda_ext.build --ops trihash hashgrid --kind all
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

log = logging.getLogger("synctalk.cuda_ext")

ROOT = Path(__file__).resolve().parent
KINDS = ("cpu", "cuda")
CPU_CFLAGS = ["-O3", "-fopenmp"]
CPU_LDFLAGS = ["-fopenmp"]
# No --use_fast_math: the CUDA path is tested against the float32 reference at 1e-5 relative error. The C++ standard
# is torch's own (-std=c++20 for torch 2.13), added by cpp_extension.
CUDA_CFLAGS = ["-O3"]

# (op, kind) -> (module or None, status). One entry per process: a failure is not retried.
_RESULTS: dict[tuple[str, str], tuple[ModuleType | None, str]] = {}


def available_ops() -> list[str]:
    """Op folders under cuda_ext/ that have at least one kernel source (a CPU .cpp or a .cu)."""
    ops = []
    for folder in sorted(p for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if any(folder.glob("*_cpu.cpp")) or any(folder.glob("*.cu")):
            ops.append(folder.name)
    return ops


def sources(op: str, kind: str) -> list[Path]:
    """The source files of one op and kind, sorted (empty when that kind is not written for the op)."""
    folder = ROOT / op
    if kind == "cpu":
        return sorted(folder.glob("*_cpu.cpp"))
    if kind == "cuda":
        cu = sorted(folder.glob("*.cu"))
        bindings = folder / "bindings_cuda.cpp"
        return cu + [bindings] if cu and bindings.is_file() else []
    raise ValueError(f"unknown kind '{kind}'; use one of {KINDS}")


def build_root() -> Path:
    """`$SYNCTALK_BUILD_DIR`, else `$SYNCTALK_HOME/build`, else `~/.cache/synctalk/build`."""
    if os.environ.get("SYNCTALK_BUILD_DIR"):
        return Path(os.environ["SYNCTALK_BUILD_DIR"]).expanduser()
    home = os.environ.get("SYNCTALK_HOME") or Path.home() / ".cache" / "synctalk"
    return Path(home).expanduser() / "build"


def _cuda_arch() -> str:
    """The arch list the CUDA build targets: $TORCH_CUDA_ARCH_LIST, else the current GPU's compute capability."""
    import torch

    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def build_params(op: str, kind: str) -> dict:
    """Everything that, when it changes, needs a rebuild (the folder name holds the coarse part)."""
    import torch

    params = {
        "op": op,
        "kind": kind,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "arch": _cuda_arch() if kind == "cuda" else platform.machine(),
        "python": platform.python_version(),
        "cflags": CPU_CFLAGS if kind == "cpu" else CUDA_CFLAGS,
        "sources": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sources(op, kind)},
    }
    return params


def build_dir(op: str, kind: str, params: dict | None = None) -> Path:
    """Cache folder for one op / kind / torch / CUDA / arch combination."""
    params = params or build_params(op, kind)
    tag = f"{op}-{kind}-torch{params['torch']}-cuda{params['cuda']}-{params['arch']}"
    return build_root() / re.sub(r"[^A-Za-z0-9._+-]", "_", tag)


def _changes(old: dict, new: dict) -> str:
    """'sources trihash_cpu.cpp, cflags' — the keys whose value differs, for the rebuild message."""
    changed = []
    for key in new:
        if key == "sources":
            changed += [f"source {name}" for name in sorted(set(old.get("sources", {})) | set(new["sources"]))
                        if old.get("sources", {}).get(name) != new["sources"].get(name)]
        elif old.get(key) != new[key]:
            changed.append(key)
    return ", ".join(changed) or "nothing recorded"


def _error_summary(exc: BaseException, max_lines: int = 6) -> str:
    """The first compiler diagnostics of a failed build, file paths shortened (the full log is long and noisy)."""
    text = str(exc)
    if isinstance(exc, subprocess.CalledProcessError):
        text += "\n" + (exc.output or "") + "\n" + (exc.stderr or "")
    lines = [line.strip() for line in text.splitlines()]
    diagnostics = [re.sub(r"^\S*/", "", line) for line in lines if re.search(r"\berror\b[:(]|fatal error", line)]
    if not diagnostics:  # linker or ninja failures: whatever mentions an error
        diagnostics = [line for line in lines if re.search(r"error|Error", line) and len(line) < 400]
    if diagnostics:
        return "\n  ".join(diagnostics[:max_lines])
    return lines[-1][:300] if text.strip() else repr(exc)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Hold the folder's OS lock (one build at a time; released even if the process is killed) and clear a stale
    torch `lock` file: torch's own lock is a plain file that a killed build leaves behind, and the next build of
    the folder would wait on it forever."""
    with open(folder / "synctalk.lock", "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; a torch lock older than an hour is taken as stale
            fcntl = None
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        stale = folder / "lock"
        if stale.exists() and (fcntl is not None or time.time() - stale.stat().st_mtime > 3600):
            log.warning("removing %s, left by a build that was killed", stale)
            stale.unlink(missing_ok=True)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


# platform.machine() -> the folder name of CUDA's per-target tree (conda's packages and the NVIDIA runfile use it)
CUDA_TARGETS = {"x86_64": "x86_64-linux", "aarch64": "sbsa-linux", "ppc64le": "ppc64le-linux"}


def cuda_toolkit_dirs() -> tuple[list[str], list[str]]:
    """(include, library) folders of the CUDA toolkit that torch's cpp_extension does not add by itself.

    Conda's CUDA 12+ packages (environment.yml) put the headers (`cuda_runtime_api.h`) and `libcudart.so` under
    `$PREFIX/targets/<arch>-linux/{include,lib}`, while torch adds only `$CUDA_HOME/include` and `$CUDA_HOME/lib64`
    (or `lib`). Looks under torch's CUDA_HOME and `$CONDA_PREFIX`; returns only folders that hold those files.
    """
    from torch.utils.cpp_extension import CUDA_HOME

    roots: list[Path] = []
    for root in (CUDA_HOME, os.environ.get("CUDA_HOME"), os.environ.get("CONDA_PREFIX")):
        if root and Path(root) not in roots:
            roots.append(Path(root))
    target = CUDA_TARGETS.get(platform.machine(), f"{platform.machine()}-linux")
    includes, libraries = [], []
    for root in roots:
        tree = root / "targets" / target
        if (tree / "include" / "cuda_runtime_api.h").is_file():
            includes.append(str(tree / "include"))
        if any((tree / "lib").glob("libcudart.so*")):
            libraries.append(str(tree / "lib"))
    return includes, libraries


def _why_unavailable(kind: str) -> str | None:
    """A reason this kind cannot be built here, or None."""
    import torch

    if kind == "cpu":
        from torch.utils.cpp_extension import is_ninja_available

        if shutil.which(os.environ.get("CXX", "c++")) is None:
            return "no C++ compiler (install g++ or set CXX)"
        if not is_ninja_available():
            return "no ninja on PATH (pip install ninja, or apt install ninja-build)"
        return None
    if not torch.cuda.is_available():
        return "torch has no CUDA (torch.cuda.is_available() is False)"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return "no nvcc (install the CUDA toolkit matching torch.version.cuda or set CUDA_HOME)"
    return None


def load(op: str, kind: str) -> tuple[ModuleType | None, str]:
    """Build (or load the cached build of) one op's extension.

    Args:
        op: folder name under cuda_ext/, e.g. "trihash".
        kind: "cpu" (C++/OpenMP, `<op>/*_cpu.cpp`) or "cuda" (`<op>/*.cu` + `<op>/bindings_cuda.cpp`).

    Returns:
        (module, "built in 31 s" | "cached") on success, (None, reason) when it cannot be built here. A compile
        failure warns once with the first compiler errors; the result is remembered for the rest of the process.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'; use one of {KINDS}")
    key = (op, kind)
    if key in _RESULTS:
        return _RESULTS[key]
    _RESULTS[key] = result = _load_uncached(op, kind)
    return result


def _load_uncached(op: str, kind: str) -> tuple[ModuleType | None, str]:
    srcs = sources(op, kind)
    if not srcs:
        return None, f"no {kind} sources in cuda_ext/{op}/"
    reason = _why_unavailable(kind)
    if reason:
        if kind == "cpu":  # every CPU machine should get the C++ path: say why not (no CUDA on a laptop is normal)
            warnings.warn(f"cuda_ext: cannot build {op} ({kind}): {reason}; using the PyTorch reference (slower)",
                          RuntimeWarning, stacklevel=3)
        return None, reason

    from torch.utils import cpp_extension

    params = build_params(op, kind)
    folder = build_dir(op, kind, params)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "build.json"
    old = json.loads(stamp.read_text()) if stamp.is_file() else None
    name = f"synctalk_{op}_{kind}"
    have_library = any(folder.glob(f"{name}*.so")) or any(folder.glob(f"{name}*.pyd"))
    cached = old == params and have_library
    if not cached:
        what = "first build" if old is None else f"rebuild ({_changes(old, params)} changed)"
        log.info("building %s (%s, %s) in %s — a CPU op takes about a minute, CUDA a few minutes",
                 op, kind, what, folder)
    kwargs = {"name": name, "sources": [str(p) for p in srcs], "build_directory": str(folder), "verbose": False}
    if kind == "cpu":
        kwargs.update(extra_cflags=CPU_CFLAGS, extra_ldflags=CPU_LDFLAGS, with_cuda=False)
    else:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", params["arch"])
        includes, libraries = cuda_toolkit_dirs()
        kwargs.update(extra_cflags=["-O3"], extra_cuda_cflags=CUDA_CFLAGS, extra_include_paths=[str(ROOT / op)]
                      + includes, extra_ldflags=[f"-L{lib}" for lib in libraries], with_cuda=True)
    start = time.perf_counter()
    try:
        with _exclusive(folder):
            module = cpp_extension.load(**kwargs)
    except Exception as exc:  # compiler errors, missing ninja, linker errors: all mean "use the reference"
        summary = _error_summary(exc)
        warnings.warn(f"cuda_ext: building {op} ({kind}) failed, using the PyTorch reference instead. Fix the "
                      f"error below or set the backend to 'torch' to silence this.\n  {summary}", RuntimeWarning,
                      stacklevel=3)
        return None, f"build failed: {summary.splitlines()[0][:200] if summary else type(exc).__name__}"
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps(params, indent=1))
    return module, "cached" if cached else f"built in {seconds:.0f} s"


BACKENDS = ("auto", "torch", "cpu", "cuda")
_CHOSEN: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Fallback:
    """An op that ran on the PyTorch reference although its tensors were on CUDA."""

    op: str
    reason: str
    fix: str


# (op, reason) -> Fallback, in the order they happened; one WARNING each
_FALLBACKS: dict[tuple[str, str], Fallback] = {}


def _fix_for(reason: str) -> str:
    import torch

    if reason.startswith("no nvcc"):
        toolkit = f"the CUDA {torch.version.cuda} toolkit" if torch.version.cuda else "a CUDA toolkit"
        return (f"install {toolkit} (conda env create -f environment.yml) or set CUDA_HOME, then run "
                "`python -m cuda_ext.build --kind cuda`")
    if reason.startswith("build failed"):
        return "run `python -m cuda_ext.build --kind cuda` for the compiler errors"
    return "run `python -m cuda_ext.build --kind cuda` to see why"


def record_fallback(op: str, reason: str, fix: str | None = None) -> None:
    """Note that `op` runs the PyTorch reference on CUDA tensors (slow); warns once per op and reason."""
    key = (op, reason)
    if key in _FALLBACKS:
        return
    _FALLBACKS[key] = record = Fallback(op, reason, fix or _fix_for(reason))
    log.warning("%s: no CUDA kernel, the PyTorch reference runs on the GPU instead (much slower): %s. Fix: %s",
                op, reason, record.fix)


def fallbacks() -> list[Fallback]:
    """The ops of this process that fell back to the PyTorch reference on CUDA tensors (empty on CPU runs)."""
    return list(_FALLBACKS.values())


def fallback_summary() -> str | None:
    """One line for a command's final summary: the ops that ran on the slow path on CUDA, why, and the fix; None
    when there were none."""
    groups: dict[tuple[str, str], list[str]] = {}
    for record in _FALLBACKS.values():
        ops = groups.setdefault((record.reason, record.fix), [])
        if record.op not in ops:
            ops.append(record.op)
    if not groups:
        return None
    parts = [f"{', '.join(ops)}: {reason} (fix: {fix})" for (reason, fix), ops in groups.items()]
    return "slow path: CUDA kernels not used, PyTorch reference instead for " + "; ".join(parts)


def resolve_backend(op: str, backend: str, device_type: str, extra: tuple[str, ...] = ()
                    ) -> tuple[str, ModuleType | None]:
    """The backend an op runs with for tensors on `device_type`: ("torch", None), ("cpu"|"cuda", module), or
    (name, None) for an op-specific backend listed in `extra` (e.g. "nerfacc"), which the op handles itself.

    `auto` picks the fast path of the tensors' device (cuda tensors → the CUDA build, cpu tensors → the C++ build)
    and falls back to the PyTorch reference when there is none or it cannot be built; it logs its choice once per
    op and device, e.g. "trihash backend: cpu (built in 31 s)", and a fallback on CUDA tensors as a WARNING that is
    kept for `fallback_summary()`. An explicit "cpu"/"cuda" on tensors of the other
    device, or one that cannot be built here, is an error that says why.
    """
    if backend not in BACKENDS + tuple(extra):
        raise ValueError(f"{op}: unknown backend '{backend}'; use one of {', '.join(BACKENDS + tuple(extra))}")
    if backend == "torch" or backend in extra:
        return backend, None
    if backend != "auto" and backend != device_type:
        raise ValueError(f"{op}: backend '{backend}' needs {backend} tensors, got tensors on {device_type}; "
                         f"move them or use backend='auto'")
    kind = device_type if device_type in KINDS else None
    module, status = load(op, kind) if kind else (None, f"no fast path for {device_type} tensors")
    if backend != "auto" and module is None:
        raise RuntimeError(f"{op}: backend '{backend}' is unavailable: {status}. Use backend='torch' or 'auto'.")
    choice = (kind, module) if module is not None else ("torch", None)
    key = (op, backend, device_type)
    if key not in _CHOSEN:
        _CHOSEN.add(key)
        if module is None and kind == "cuda":
            record_fallback(op, status)
        else:
            reason = status if module is not None else f"{kind or device_type}: {status}"
            log.info("%s backend: %s (%s)", op, choice[0], reason)
    return choice


def nvcc_compile_check(path: str | Path, timeout_s: float = 300.0) -> tuple[bool, str]:
    """Compile one .cu file to an object with `nvcc -c -std=c++17` and torch's include paths; nothing is linked.

    Checks kernels for syntax and types on machines without a GPU. Our .cu files include no torch headers (the
    bindings do), so this takes seconds. A CPU-only torch wheel lacks c10/cuda/impl/cuda_cmake_macros.h; for .cu
    files that include c10/cuda headers anyway, a stub of that one generated header is put on the include path.

    Returns:
        (True, "") when it compiles, else (False, the first error lines).
    """
    from torch.utils.cpp_extension import include_paths

    nvcc = shutil.which("nvcc") or str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        return False, "nvcc not found on PATH or under $CUDA_HOME/bin"
    with tempfile.TemporaryDirectory() as tmp:
        includes = [f"-I{p}" for p in include_paths() + cuda_toolkit_dirs()[0]] + [f"-I{_python_include()}"]
        if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for p in include_paths()):
            stub = Path(tmp) / "stub" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
            stub.parent.mkdir(parents=True)
            stub.write_text("#pragma once\n")
            includes.append(f"-I{Path(tmp) / 'stub'}")
        cmd = [nvcc, "-c", "-std=c++17", "-O1", *includes, str(path), "-o", str(Path(tmp) / "x.o")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False, f"nvcc timed out after {timeout_s:.0f} s"
    if proc.returncode == 0:
        return True, ""
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "error" in line]
    return False, "\n".join(errors[:10]) or output[-2000:]


def _python_include() -> str:
    import sysconfig

    return sysconfig.get_paths()["include"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cuda_ext.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", default=None, help="op folders to build (default: all with sources)")
    parser.add_argument("--kind", choices=("cpu", "cuda", "all"), default="all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ops = args.ops or available_ops()
    kinds = KINDS if args.kind == "all" else (args.kind,)
    rows = []
    for op in ops:
        for kind in kinds:
            module, status = load(op, kind)
            rows.append((op, kind, "ok" if module is not None else "-", status))
    widths = [max(len(str(r[i])) for r in rows + [("op", "kind", "ok", "status")]) for i in range(4)]
    for row in [("op", "kind", "ok", "status"), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"build folder: {build_root()}")
    failed = [r for r in rows if r[3].startswith("build failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
