"""pytest plugin of scripts/gpu_check.py (loaded with ``-p gpu_check_plugin``, ``scripts/`` on ``PYTHONPATH``).

On the GPU check every CUDA test must run, so a test skipped for a reason that means "this machine lacks the GPU
or the toolchain" (``needs a CUDA GPU``, ``nvcc not on PATH``, an extension that did not build, ...) is reported as
a failure instead of a skip. Other skips (a CPU-only error path that a GPU machine legitimately skips, absent real
data) stay skips.

``--cuda-only`` keeps only the collected tests that touch CUDA: a parameter id or name with ``cuda`` in it, a skip
mark that mentions CUDA/GPU/nvcc, or a test function whose source mentions ``cuda`` (not counting the package name
``cuda_ext``); the rest are deselected.
"""

from __future__ import annotations

import inspect
import re

import pytest

# Skip reasons that mean the machine lacks what the GPU check exists to exercise.
MUST_NOT_SKIP = re.compile(r"needs a CUDA GPU|nvcc not on PATH|did not build|no C\+\+ compiler|"
                           r"nvcc_compile_check is not available|torch\.cuda\.is_available\(\) is False", re.I)
_CUDA_WORDS = re.compile(r"cuda(?!_ext)|gpu|nvcc", re.I)
# "cuda" as the device or backend, not the name of the cuda_ext package (whose CPU paths CI tests everywhere).
CUDA = re.compile(r"cuda(?!_ext)", re.I)


def pytest_addoption(parser) -> None:
    parser.addoption("--cuda-only", action="store_true", default=False,
                     help="gpu_check: keep only the tests that touch CUDA (deselect the rest)")


def touches_cuda(item) -> bool:
    """Whether a collected test exercises CUDA (see the module docstring)."""
    if CUDA.search(item.nodeid.split("::", 1)[-1]):  # the test's name and parameters, not its file's path
        return True
    for mark in item.iter_markers("skipif"):
        if _CUDA_WORDS.search(str(mark.kwargs.get("reason", ""))):
            return True
    function = getattr(item, "function", None)
    if function is not None:
        try:
            return bool(CUDA.search(inspect.getsource(function)))
        except (OSError, TypeError):
            return False
    return False


def pytest_collection_modifyitems(config, items) -> None:
    if not config.getoption("--cuda-only"):
        return
    keep = [item for item in items if touches_cuda(item)]
    dropped = [item for item in items if not touches_cuda(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if MUST_NOT_SKIP.search(reason):
            report.outcome = "failed"
            report.longrepr = (f"gpu_check: this test was skipped ({reason.removeprefix('Skipped: ')}), "
                               "but on the GPU check every CUDA test must run")
