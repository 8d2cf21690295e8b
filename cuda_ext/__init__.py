"""CUDA kernels and C++ fast paths, each beside a pure-PyTorch reference with the same signature.

    from cuda_ext import load, available_ops
    module, status = load("trihash", "cpu")     # (module, "built in 31 s" | "cached") or (None, reason)

Importing this package compiles nothing and imports no torch; `load` JIT-builds on first use (see build.py).
Each op folder (trihash/, hashgrid/, march/, composite/) has reference.py (the spec), ops.py (checks, autograd,
backend dispatch torch|cpu|cuda|auto), <op>_cpu.cpp and <op>.cu + bindings_cuda.cpp.
"""

from __future__ import annotations


def load(op: str, kind: str):
    """Build or load one op's extension: (module, status) or (None, reason). See cuda_ext.build.load."""
    from cuda_ext.build import load as _load

    return _load(op, kind)


def available_ops() -> list[str]:
    """Op folders that have kernel sources, e.g. ['composite', 'hashgrid', 'march', 'trihash']."""
    from cuda_ext.build import available_ops as _available_ops

    return _available_ops()


__all__ = ["available_ops", "load"]
