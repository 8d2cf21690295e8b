"""Ray marching through an occupancy grid: reference.py (PyTorch spec), ops.py (dispatch), march.cu (kernels)."""
