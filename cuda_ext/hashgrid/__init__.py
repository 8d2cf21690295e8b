"""3D multiresolution hash grid (Instant-NGP): reference.py (spec), ops.py (dispatch), C++ and CUDA kernels."""
