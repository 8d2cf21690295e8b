"""Tri-plane 2D hash grid (SyncTalk): reference.py (spec), ops.py (dispatch), C++ and CUDA kernels."""
