"""Process-wide runtime choices: device selection, seeding, logging."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator

from synctalk.errors import UserInputError

log = logging.getLogger("synctalk")


def resolve_device(name: str = "auto"):
    """`auto` → cuda when available, else cpu. Asking for cuda without a GPU is a usage error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was requested but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if name not in ("cpu", "cuda"):
        raise UserInputError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_precision(device=None, tf32: bool = True) -> str:
    """Float32 precision of CUDA matmuls and cuDNN convolutions for the whole process: TF32 tensor cores when
    ``tf32`` (config ``train.tf32``), else full IEEE float32. Call it once per command, after the device is resolved.

    Uses only the per-backend API of torch >= 2.9 (``torch.backends.cuda.matmul.fp32_precision``,
    ``torch.backends.cudnn.conv/rnn.fp32_precision``): torch raises when code reads the deprecated ``allow_tf32``
    flags after the new API was used, so nothing here touches them. The flags exist on CPU-only builds too, where they
    change nothing; CPU (oneDNN) matmuls keep full float32. Returns a one-line description for logs.
    """
    import torch

    device = torch.device(device if device is not None else "cpu")
    mode = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.rnn.fp32_precision = mode
    if device.type != "cuda":
        return f"precision: float32 on {device.type} (CUDA matmul/conv set to {mode}, unused here)"
    return f"precision: CUDA matmul and cuDNN conv {mode}" + (" (TF32 tensor cores)" if tf32 else " (full float32)")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (not the stream of when it was created), so
    a redirected or replaced stderr (pytest capture, notebooks) keeps working."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings only), 0 info, 1+ debug. Logs go to stderr: rich on a terminal, plain
    unwrapped lines otherwise (CI logs, pipes)."""
    import sys

    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False,
                                               markup=False, rich_tracebacks=verbosity > 0)
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("synctalk")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def import_mediapipe():
    """Import mediapipe without its protobuf deprecation warning (noise from mediapipe 0.10.14 itself)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
        import mediapipe

    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
    return mediapipe


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back what native libraries (TFLite inside MediaPipe) print on file descriptor 2 while the block
    runs; it is replayed only if the block raises, so failures keep their diagnostics."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def configure_threads() -> str:
    """CPU threading that degrades gracefully when other processes compete for the cores.

    PyTorch's and our C++ ops' OpenMP threads spin-wait at every barrier by default; on a busy laptop a descheduled
    thread then keeps the others spinning, and a step is many times slower. Before torch is imported this sets
    ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) unless the environment already chose one. The environment
    variable ``SYNCTALK_THREADS`` overrides: ``off`` (leave OpenMP and torch alone), or a thread count ``N``.
    Returns a one-line description of the choice (for logs and benchmarks).
    """
    import os
    import sys

    choice = os.environ.get("SYNCTALK_THREADS", "auto").strip().lower()
    if choice == "off":
        return "threads: torch defaults (SYNCTALK_THREADS=off)"
    notes = []
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        notes.append(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    else:
        notes.append("torch already imported: OpenMP wait policy unchanged")
    if choice.isdigit() and int(choice) > 0:
        import torch

        torch.set_num_threads(int(choice))
        notes.append(f"{choice} threads")
    return "threads: " + ", ".join(notes)
