"""Process-wide runtime choices: device selection, seeding, logging."""

from __future__ import annotations

import logging
import random

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


def setup_logging(verbosity: int = 0) -> None:
    """verbosity: -1 quiet (warnings only), 0 info, 1+ debug. Rich formatting when on a terminal."""
    from rich.logging import RichHandler

    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=verbosity > 0)
    root = logging.getLogger("synctalk")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
