"""CUDA kernels, each beside a pure-PyTorch reference with the same signature (see docs/architecture.md).

Importing this package compiles nothing; kernels are JIT-built on first use where torch has CUDA.
"""
